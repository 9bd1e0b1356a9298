"""The one "did you mean" of zoo's messages."""

from __future__ import annotations

import difflib
from typing import Iterable


def close_matches(text: object, known: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """Up to three names of ``known`` that look like ``text``, the closest first."""
    return difflib.get_close_matches(str(text), sorted(set(known)), n=3, cutoff=cutoff)


def did_you_mean(text: object, known: Iterable[str], cutoff: float = 0.6) -> str:
    """``" Did you mean 'a' or 'b'?"`` for the names of ``known`` close to ``text``, else ``""``."""
    close = close_matches(text, known, cutoff)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
