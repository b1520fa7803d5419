"""Walking the folder a user named: which files are read, which are left out, and why (docs/ingestion.md)."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".docsrag"})

#: Sphinx ships the reST sources of its HTML pages in _sources/; they are read only when no page is beside them.
SPHINX_SOURCES = "_sources"


@dataclass
class Found:
    """A file to ingest: ``path`` is where the walk found it (its name in the index), ``real`` the resolved file read."""

    path: Path
    real: Path
    size: int
    mtime_ns: int


@dataclass
class Walk:
    found: list[Found] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path under the root, reason)
    ignored: int = 0  # supported files left out by the ignore globs and documentation layouts


def is_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class _Ignore:
    """``ingestion.ignore`` globs: a pattern without '/' matches any file or folder name, one with '/' the end of the path."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.names = [p for p in patterns if "/" not in p.strip("/")]
        self.paths = [p.strip("/") for p in patterns if "/" in p.strip("/")]

    def __call__(self, relative: str) -> bool:
        name = relative.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(name, p) for p in self.names):
            return True
        return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(relative, "*/" + p) for p in self.paths)


def walk(root: Path, wanted: Callable[[str], bool], ignore: Sequence[str] = (), exclude: Path | None = None) -> Walk:
    """Files under the resolved ``root`` (or ``root`` itself) whose name ``wanted`` accepts, in sorted order.

    Real folders are walked before linked ones, so a file reachable both ways is listed under its real path.
    """
    result = Walk()
    if not root.is_dir():
        _add_file(result, root, root, wanted)
        return result
    ignored = _Ignore(ignore)
    visited: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    linked_dirs: list[tuple[Path, Path]] = []  # (link path, resolved target) walked after every real folder

    def walk_dir(directory: Path, shown: Path) -> None:
        """Walk the real folder ``directory``, naming what it holds under ``shown`` (differs below a linked folder)."""
        stack = [(directory, shown)]
        while stack:
            real_dir, shown_dir = stack.pop()
            try:
                info = os.stat(real_dir)
                if (info.st_dev, info.st_ino) in visited:
                    continue
                visited.add((info.st_dev, info.st_ino))
                with os.scandir(real_dir) as entries:
                    names = sorted(entries, key=lambda e: e.name)
            except OSError as exc:
                result.skipped.append((shown_dir, f"folder cannot be listed: {exc.strerror or exc}"))
                continue
            has_pages = any(e.name.lower().endswith((".html", ".htm")) for e in names)
            subdirs: list[tuple[Path, Path]] = []
            for entry in names:
                real, shown_path = Path(entry.path), shown_dir / entry.name
                relative = shown_path.relative_to(root).as_posix()
                if entry.name.startswith(".") or entry.name in SKIPPED_DIRS or (exclude is not None and real == exclude):
                    continue
                try:
                    is_link = entry.is_symlink()
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_link = is_dir = False
                if ignored(relative) or (is_dir and entry.name == SPHINX_SOURCES and has_pages):
                    result.ignored += _count_wanted(real, wanted) if is_dir else int(wanted(entry.name))
                    continue
                if is_link:
                    target = _resolve_link(result, real, shown_path, root, wanted(entry.name))
                    if target is None:
                        continue
                    if target.is_dir():
                        linked_dirs.append((shown_path, target))
                    else:
                        _add_file(result, shown_path, target, wanted, seen_files, via_link=True)
                elif is_dir:
                    subdirs.append((real, shown_path))
                else:
                    _add_file(result, shown_path, real, wanted, seen_files)
            stack.extend(reversed(subdirs))

    walk_dir(root, root)
    while linked_dirs:
        shown, target = linked_dirs.pop(0)
        walk_dir(target, shown)
    result.found = _prefer_real_paths(result.found)
    return result


def _resolve_link(result: Walk, link: Path, shown: Path, root: Path, wanted: bool) -> Path | None:
    """The link's target if it is inside ``root``; else None, reported when the link has a supported name or leads to a folder."""
    try:
        target = Path(os.path.realpath(link, strict=True))
    except OSError as exc:
        if wanted:
            reason = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link (its target does not exist)"
            result.skipped.append((shown, reason))
        return None
    if not is_inside(target, root):
        if wanted or target.is_dir():
            result.skipped.append((shown, "symbolic link to a path outside the ingested folder (not read)"))
        return None
    return target


def _add_file(result: Walk, shown: Path, real: Path, wanted: Callable[[str], bool], seen: set | None = None, via_link=False) -> None:
    if not wanted(shown.name):
        return
    try:
        info = os.stat(real)
    except OSError as exc:
        result.skipped.append((shown, f"cannot be read: {exc.strerror or exc}"))
        return
    if not stat.S_ISREG(info.st_mode):
        result.skipped.append((shown, f"not a regular file ({_kind(info.st_mode)}): not read"))
        return
    if seen is not None:
        key = (info.st_dev, info.st_ino)
        if key in seen and via_link:
            return  # the same file, already listed under another name
        seen.add(key)
    result.found.append(Found(shown, real, info.st_size, info.st_mtime_ns))


def _prefer_real_paths(found: list[Found]) -> list[Found]:
    """A file listed through a link first and then under its own name keeps its own name."""
    by_real: dict[Path, Found] = {}
    for item in found:
        kept = by_real.get(item.real)
        if kept is None or (kept.path != kept.real and item.path == item.real):
            by_real[item.real] = item
    return sorted(by_real.values(), key=lambda f: f.path.as_posix())


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "special file"


def _count_wanted(directory: Path, wanted: Callable[[str], bool]) -> int:
    """Files an ignored folder holds, for the summary (links not followed)."""
    return sum(wanted(name) for _, _, filenames in os.walk(directory) for name in filenames)


class ReadRefused(OSError):
    """The path is not a regular file any more, or grew past the limit, between the walk and the read."""


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened non-blocking and without following a final symlink, then checked with fstat: a file swapped for a FIFO,
    device or link after the walk is refused instead of hanging or escaping the folder.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReadRefused(errno.ELOOP, "became a symbolic link after the folder was listed") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadRefused(errno.EINVAL, f"not a regular file ({_kind(info.st_mode)})")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ReadRefused(errno.EFBIG, f"larger than the {limit / 1e6:g} MB read limit")
    return data
