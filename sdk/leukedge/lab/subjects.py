"""What a C-NMC 2019 file name says about its subject (patient), in pure Python.

C-NMC 2019 names every cell image ``UID_<subject>_<image>_<cell>_all.bmp`` for subjects with
ALL and ``UID_H<subject>_<image>_<cell>_hem.bmp`` for healthy ones (Gupta & Gupta (eds),
*ISBI 2019 C-NMC Challenge*, Springer 2019; a few files of the release spell the ``H`` in
lower case). The runtime groups results by subject (``leukedge classify --group-by
subject``) and training splits by subject, both through :func:`parse_subject`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SUBJECT_RE = re.compile(r"^UID_(H?)(\d+)_", re.IGNORECASE)


def parse_subject(filename: str | os.PathLike) -> str | None:
    """Subject ID from a C-NMC file name (or path), case-insensitively.

    ``UID_11_10_1_all.bmp`` → ``"11"``; ``UID_H22_31_15_hem.bmp`` and ``UID_h3_4_1_hem.bmp``
    → ``"H22"``, ``"H3"`` (healthy subjects carry an ``H``; leading zeros are dropped).
    Returns ``None`` for names without the ``UID_`` prefix (e.g. the numbered files of the
    preliminary test phase, or any other camera's file names).
    """
    match = _SUBJECT_RE.match(Path(filename).name)
    if not match:
        return None
    return f"{match.group(1).upper()}{int(match.group(2))}"
