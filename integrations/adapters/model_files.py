"""Model files checked against pinned SHA-256 digests before anything loads them."""

from __future__ import annotations

import hashlib
from pathlib import Path


class ModelFileError(RuntimeError):
    """A model file is missing or is not the file whose digest is pinned."""


def verified(path: Path, sha256: str, what: str) -> str:
    """``path`` as a string once its SHA-256 is ``sha256``; otherwise a ModelFileError naming the file and the fix."""
    try:
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as exc:
        raise ModelFileError(f"{what} {path} cannot be read ({exc.strerror}): reinstall with `make install`") from exc
    if digest != sha256:
        raise ModelFileError(
            f"{what} {path} is not the pinned file (SHA-256 {digest}, expected {sha256}): it was changed or replaced; "
            "reinstall with `make install`"
        )
    return str(path)
