"""forensix: a flight recorder for Linux hosts."""

from forensix._arrowpool import lazy_arrow_arena

lazy_arrow_arena()  # before pyarrow is first imported (forensix/_arrowpool.py)

from forensix._nopandas import tell_pyarrow_no_pandas  # after pyarrow's pool is set up

__version__ = "0.1.0"
__all__ = ["__version__"]

# Before any module of ours converts a Python list with pyarrow (several do at import):
# forensix never hands pandas objects to pyarrow, and pandas cost the recorder 1-2 s of
# start-up and 30 MB (forensix/_nopandas.py).
tell_pyarrow_no_pandas()
