"""leukedge: find leukemic blasts in microscope images on edge hardware."""

from leukedge._version import __version__

__all__ = ["__version__"]
