"""Ids of the index's rows, and the Milvus filter for a file's chunks (docs/ingestion.md "Files and their names").

Ids reach Milvus filter expressions built without escaping, so no file name ever appears in one: a file id is a hash
of its root and path, and ids hold only hex digits, ``#``, ``:`` and decimal digits.

    file id   <20 hex digits>
    piece id  <file id>#<piece number>          (a page or section; the chunks' ref doc id)
    chunk id  <piece id>:<chunk number in the piece>"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store (milvus_store) imports this module: starting the index's server must not wait for LlamaIndex
    from llama_index.core.schema import BaseNode

FILE_ID_DIGITS = 20
_FILE_ID = re.compile(rf"^[0-9a-f]{{{FILE_ID_DIGITS}}}$")
_CHUNK_ID = re.compile(rf"^(?P<file>[0-9a-f]{{{FILE_ID_DIGITS}}})#(?P<piece>\d+):(?P<index>\d+)$")
_PIECE_ID = re.compile(rf"^(?P<file>[0-9a-f]{{{FILE_ID_DIGITS}}})#(?P<piece>\d+)$")


def file_id(root: str | Path, relative: str) -> str:
    """The id of the file at ``relative`` inside the folder ``root``: two folders' README.md are two files."""
    # fsencode restores the bytes of names that are not valid UTF-8 (surrogate escapes).
    key = os.fsencode(str(root)) + b"\0" + os.fsencode(relative)
    return hashlib.sha256(key).hexdigest()[:FILE_ID_DIGITS]


def piece_id(file: str, piece: int) -> str:
    return f"{file}#{piece}"


def chunk_id(file: str, piece: int, index: int) -> str:
    return f"{piece_id(file, piece)}:{index}"


def split_id(index: int, piece: BaseNode) -> str:
    """The node parsers' ``id_func``: the ``index``-th chunk of a piece document (same piece, same ids, same rows)."""
    return f"{piece.id_}:{index}"


def parse_chunk_id(node_id: str) -> tuple[str, int, int] | None:
    """(file id, piece number, chunk number) of a chunk id, None for ids of another shape."""
    match = _CHUNK_ID.match(node_id)
    return (match["file"], int(match["piece"]), int(match["index"])) if match else None


def parse_piece_id(node_id: str) -> tuple[str, int] | None:
    """(file id, piece number) of a piece id, None for ids of another shape."""
    match = _PIECE_ID.match(node_id)
    return (match["file"], int(match["piece"])) if match else None


def files_filter(file_ids: list[str]) -> str:
    """A Milvus filter for every chunk of these files: a range of the ``doc_id`` column (compared in bulk, unlike the
    JSON ``source`` metadata) per file; only checked file ids are written into the expression."""
    for file in file_ids:
        if not _FILE_ID.match(file):
            raise ValueError(f"not a file id: {file!r}")
    return " or ".join(f'(doc_id >= "{file}#0" and doc_id < "{file}#:")' for file in file_ids)
