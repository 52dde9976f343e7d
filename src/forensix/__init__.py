"""forensix: a flight recorder for Linux hosts."""

from forensix._nopandas import tell_pyarrow_no_pandas

__version__ = "0.1.0"
__all__ = ["__version__"]

# Before any module of ours converts a Python list with pyarrow (several do at import):
# forensix never hands pandas objects to pyarrow, and pandas cost the recorder 1-2 s of
# start-up and 30 MB (forensix/_nopandas.py).
tell_pyarrow_no_pandas()
