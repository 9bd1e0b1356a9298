"""The one atomic writer: a file appears whole or not at all, and a kill leaves nothing behind.

Data goes to a temporary file in the target's own folder (same filesystem, so the rename is
atomic), is flushed to disk, then renamed over the target. A failed write removes its temporary
file; a process killed mid-write leaves one named ``.NAME.zoo-tmp-XXXX``, which
``remove_stale_temporaries`` deletes the next time the folder is opened.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TEMP_MARK = ".zoo-tmp-"


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted write left in ``folder`` (and ``samples/``)."""
    folder = Path(folder)
    removed = []
    for place in (folder, folder / "samples"):
        if not place.is_dir():
            continue
        for path in place.iterdir():
            if path.name.startswith(".") and TEMP_MARK in path.name and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
