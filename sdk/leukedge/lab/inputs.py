"""Which files to classify: paths, folders walked for images, and lists of paths.

``leukedge classify PATH… [--files-from LIST]`` takes any mix of

- **files**: classified as named, whatever their suffix (a file the user names is never
  skipped silently; one that is not an image gets a per-file error);
- **folders**: walked recursively for image files (:data:`IMAGE_SUFFIXES`, any case), in
  sorted path order; hidden files and folders (name starting with ``.``) and other files
  are skipped and counted (:class:`Skipped`), so a folder of 40,000 images never meets the
  shell's argument-length limit;
- **a list file** (``--files-from``, ``-`` = standard input): one path per line (files or
  folders, treated as above), blank lines ignored, as ``find … | leukedge classify
  --files-from -``.

Inputs keep the order they were given in; duplicates are kept (each is classified).
Symbolic links to files are followed; symbolic links to folders are not descended (no
cycles).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff"})
"""File suffixes (compared in lower case) picked up when walking a folder; the formats the
training data come in and that Pillow decodes without plugins."""


def is_hidden(name: str) -> bool:
    """``True`` for a file or folder name starting with ``.`` (Unix convention; also the
    ``._*`` resource forks macOS leaves on shared drives)."""
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    """``True`` if ``name``'s suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


@dataclass
class Skipped:
    """What a folder walk left out, for the summary line.

    Attributes:
        hidden_files: files whose name starts with ``.``.
        hidden_folders: folders whose name starts with ``.`` (not descended; their files
            are not counted).
        other_suffixes: non-image files by lower-case suffix (``""`` for none).
        unreadable: ``"<folder>: <problem>"`` for each folder that could not be listed.
        repeated: paths given more than once (directly, through overlapping folders, links
            or ``--files-from``), classified once: counting an image twice would weigh it
            twice in a slide's call.
    """

    hidden_files: int = 0
    hidden_folders: int = 0
    other_suffixes: Counter = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    repeated: int = 0

    @property
    def not_images(self) -> int:
        """Number of non-image files skipped."""
        return sum(self.other_suffixes.values())

    def describe(self) -> str:
        """One phrase for the summary, e.g. ``"2 non-image files (.txt 1, .csv 1), 1 hidden
        file"``; ``""`` when nothing was skipped."""
        parts = []
        if self.not_images:
            kinds = ", ".join(
                f"{suffix or '(no suffix)'} {count}"
                for suffix, count in sorted(
                    self.other_suffixes.items(), key=lambda i: (-i[1], i[0])
                )
            )
            parts.append(f"{self.not_images} non-image file{_s(self.not_images)} ({kinds})")
        if self.hidden_files:
            parts.append(f"{self.hidden_files} hidden file{_s(self.hidden_files)}")
        if self.hidden_folders:
            parts.append(f"{self.hidden_folders} hidden folder{_s(self.hidden_folders)}")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable folder{_s(len(self.unreadable))}")
        if self.repeated:
            parts.append(f"{self.repeated} repeated path{_s(self.repeated)} (classified once)")
        return ", ".join(parts)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


@dataclass
class Inputs:
    """The expanded inputs: ``paths`` to classify, in order, and what was ``skipped``."""

    paths: list[Path]
    skipped: Skipped


def walk_images(folder: str | os.PathLike, skipped: Skipped | None = None) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path.

    Args:
        folder: the folder to walk; paths returned start with it as given.
        skipped: counts of hidden and non-image files are added here.

    Returns:
        ``Path`` list sorted by path components (so ``a/b.jpg`` before ``a-b/c.jpg``).
        Symbolically linked folders are walked too (labs link slide folders together),
        each real folder once, so a link back up the tree cannot loop.
    """
    skipped = skipped if skipped is not None else Skipped()
    found: list[Path] = []
    seen_folders: set[str] = set()

    def unreadable(exc: OSError) -> None:
        skipped.unreadable.append(f"{exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_folders:  # a second name (link) of a folder already walked
            dirnames[:] = []
            # Its images are repeats (counted without following links: no loop).
            skipped.repeated += sum(
                is_image_name(n) and not is_hidden(n) for _, _, ns in os.walk(real) for n in ns
            )
            continue
        seen_folders.add(real)
        hidden = [d for d in dirnames if is_hidden(d)]
        skipped.hidden_folders += len(hidden)
        # Real folders before links to them, each group by name: the walk (and so which
        # name a linked slide is reported under) does not depend on the directory order.
        dirnames[:] = sorted(
            (d for d in dirnames if not is_hidden(d)),
            key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d),
        )
        for name in filenames:
            if is_hidden(name):
                skipped.hidden_files += 1
            elif is_image_name(name):
                found.append(Path(dirpath, name))
            else:
                skipped.other_suffixes[os.path.splitext(name)[1].lower()] += 1
    found.sort()
    return found


def read_path_list(stream: TextIO) -> Iterator[str]:
    """Paths from a text stream, one per line; line ends stripped, blank lines skipped
    (leading and trailing spaces are kept: they can be part of a file name)."""
    for line in stream:
        path = line.rstrip("\r\n")
        if path.strip():
            yield path


def collect_inputs(
    paths: Iterable[str | os.PathLike] = (), files_from: str | os.PathLike | None = None
) -> Inputs:
    """Expand command-line paths and a ``--files-from`` list into the images to classify.

    Args:
        paths: files and folders, in order (folders are walked by :func:`walk_images`).
        files_from: a text file of paths (one per line), or ``"-"`` for standard input;
            its entries follow ``paths``.

    Returns:
        :class:`Inputs`. A path that does not exist is kept, so that it gets its own
        "No such file or directory" result rather than vanishing. A file reached twice
        (the same :func:`file_identity`) is kept once, at its first place, and counted in
        ``skipped.repeated``.

    Raises:
        OSError: ``files_from`` cannot be read.
    """
    skipped = Skipped()
    expanded: list[Path] = []
    entries: list[str | os.PathLike] = list(paths)
    if files_from is not None:
        if str(files_from) == "-":
            entries += list(read_path_list(sys.stdin))
        else:
            with open(files_from, encoding="utf-8") as handle:
                entries += list(read_path_list(handle))
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            expanded += walk_images(path, skipped)
        else:
            expanded.append(path)
    unique: list[Path] = []
    seen: set[object] = set()
    for path in expanded:
        key = file_identity(path)
        if key in seen:
            skipped.repeated += 1
        else:
            seen.add(key)
            unique.append(path)
    return Inputs(unique, skipped)


def file_identity(path: str | os.PathLike) -> object:
    """What makes two paths the same file: ``(device, inode)`` for an existing file (so
    symbolic and hard links are one file), else the resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


ExistingOutput = Literal["refuse", "replace", "append"]
"""What a command does with an output file that already exists and is not empty:
``"refuse"`` (the default of ``classify``: yesterday's results are not replaced without
``--overwrite``), ``"replace"`` (``--overwrite``) or ``"append"`` (``watch``'s record file)."""


def check_output_paths(
    outputs: dict[str, Path | None],
    inputs: Iterable[Path] = (),
    *,
    existing: ExistingOutput = "replace",
) -> None:
    """Refuse output files that cannot be written, or would destroy an input, each other or
    earlier results, before any work.

    Args:
        outputs: ``{option name: path}`` of the files a command will write (``None``: not
            asked for).
        inputs: the images it will read.
        existing: what the command does with an output that exists and is not empty
            (:data:`ExistingOutput`); ``"refuse"`` refuses it here.

    Raises:
        ValueError: an output path has an image suffix (a shell glob such as
            ``--csv d/*.jpg`` makes the first image the output file), is one of the inputs
            (images, the ``--files-from`` list, the ``--group-map``), is a folder or another
            non-regular file (a FIFO, a device such as ``/dev/stdout``: outputs are replaced
            atomically, which would replace the device node), is given for two outputs,
            exists with ``existing="refuse"``, or cannot be written
            (:func:`check_writable`); the message names the option and path.
    """
    input_ids = {file_identity(p) for p in inputs}
    taken: dict[object, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if str(path) == "-":
            raise ValueError(
                f"{option} -: '-' is not standard output for a file option; give a file path "
                "(`leukedge classify --json` streams JSON Lines to standard output)"
            )
        key = file_identity(path)
        if is_image_name(str(path)) or is_image_name(os.path.realpath(path)):
            raise ValueError(
                f"{option} {path}: the output file (or what it links to) has an image suffix; "
                "refusing to overwrite what may be an image (did a shell pattern such as *.jpg "
                "expand into it?)"
            )
        if key in input_ids:
            raise ValueError(f"{option} {path}: is also an input; refusing to overwrite it")
        if os.path.isdir(path):
            raise ValueError(f"{option} {path}: is a folder, not a file")
        if os.path.exists(path) and not os.path.isfile(path):
            raise ValueError(
                f"{option} {path}: is not a regular file (a pipe or device); write to a file"
            )
        if key in taken:
            raise ValueError(f"{option} {path}: the same file as {taken[key]}")
        taken[key] = option
        if existing == "refuse" and os.path.isfile(path) and os.path.getsize(path) > 0:
            raise ValueError(
                f"{option} {path}: exists (earlier results?); refusing to replace it. Give "
                "--overwrite to replace it, or another file name"
            )
        check_writable(option, path, in_place=existing == "append")


def check_writable(
    option: str, path: str | os.PathLike, *, in_place: bool = False, folder: bool = False
) -> None:
    """Refuse an output that this process cannot create, before any work.

    An output file is written as a new file in its folder and renamed onto the target
    (:class:`~leukedge.lab.outputs.AtomicTextFile`), through a symbolic link into its target,
    and missing folders are created: so the **nearest existing folder** on the way to the
    target must be a folder in which this process may create files. With ``in_place`` (a
    file appended to, as ``watch``'s records), an existing target must itself be writable.
    With ``folder``, ``path`` is an output folder (``camera --snapshot``) that files are
    created in: it, or its nearest existing parent, must allow that.

    The check is :func:`os.access` with the effective user (it sees permissions, ACLs and
    read-only mounts: ``EROFS`` applies to root too), not a trial write, so a run that is
    refused leaves nothing behind.

    Raises:
        ValueError: ``"<option> <path>: <problem>"``; the problem names the folder (a
            file on the way, no permission to create files in it, a read-only file system).
    """
    target = Path(os.path.realpath(path))
    if in_place and target.exists():
        if not _may(target, os.W_OK):
            raise ValueError(f"{option} {path}: {_why_not(target, 'write to the file')}")
        return
    where = target if folder else target.parent
    while not os.path.lexists(where) and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise ValueError(
            f"{option} {path}: {where} is not a folder (a file is in the way), so nothing "
            "can be written there"
        )
    if not _may(where, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {_why_not(where, 'create files in')}")


def check_output_folder(option: str, folder: str | os.PathLike | None) -> None:
    """Refuse an output folder (``camera --snapshot DIR``) that is a file or in which this
    process cannot create files (:func:`check_writable`); ``None``: nothing asked for.

    Raises:
        ValueError: the message names the option, the folder and the problem.
    """
    if folder is None:
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{option} {folder}: is a file, not a folder")
    check_writable(option, folder, folder=True)


def _may(path: Path, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _why_not(path: Path, action: str) -> str:
    """``"cannot create files in /x: a read-only file system"`` (or ``: permission
    denied``)."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        read_only = False
    problem = "a read-only file system" if read_only else "permission denied"
    return f"cannot {action} {path}: {problem}"


def check_is_a_record_file(path: str | os.PathLike) -> None:
    """Refuse to append records to an existing file that is not leukedge's JSON Lines
    (``watch`` repairs a cut-short last line, which would cut another file's text).

    Raises:
        ValueError: ``path`` exists, is not empty, and its first line is not a JSON object
            with a ``"path"`` (a leukedge record).
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and "path" in record):
        raise ValueError(
            f"--jsonl {path}: exists and is not a leukedge JSON Lines file (its first line is "
            "not a record); refusing to append to it"
        )
