"""Single source of the leukedge version (read by setuptools and written into model cards)."""

__version__ = "0.1.0"
