"""forensix: a flight recorder for Linux hosts."""

__version__ = "0.1.0"
__all__ = ["__version__"]
