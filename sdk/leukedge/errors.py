"""leukedge's exception base and warning category.

Every error leukedge raises on purpose derives from :class:`LeukedgeError` (and, where it
did before, also from the built-in it replaces: :class:`~leukedge.ImageDecodeError`
is still a ``ValueError``, :class:`~leukedge.ModelLoadError` a ``RuntimeError``), so
embedding software can catch leukedge's errors without catching everything, and older
``except ValueError`` clauses keep working. Every warning leukedge emits is a
:class:`LeukedgeWarning` and names the file it is about, when there is one; the CLI prints
those as one ``warning: …`` line and leaves other libraries' warnings in Python's format.

Usage errors (a wrong running mode, an unknown ``pixel_format``) stay plain ``ValueError``
or ``TypeError``, as in MediaPipe Tasks: they are bugs in the calling code, not conditions
to handle.
"""

from __future__ import annotations


class LeukedgeError(Exception):
    """Base of every error leukedge raises on purpose (bad image, model, metadata, runtime)."""


class LeukedgeWarning(UserWarning):
    """A warning from leukedge itself (not from a library it uses); names the file, if any."""


def install_hint(extra: str) -> str:
    """The command that installs the optional dependencies ``extra`` (``train``, ``weights``,
    ``compare``; pyproject.toml's ``[project.optional-dependencies]``).

    leukedge is installed from its repository folder, not from a package index, so the hint
    is ``pip install ".[extra]"`` run in that folder: ``pip install "leukedge[extra]"``
    would look for a package named leukedge on PyPI and fail.
    """
    return f'pip install ".[{extra}]" (in the leukedge repository folder)'
