"""Numba's on-disk cache for the simulator's compiled kernels, keyed by the sources they come from.

Numba invalidates a cached function when its own file changes, but not when a function it calls
in another file does; the kernels call the control core. The cache therefore lives in a directory
named by a hash of every source of controller/, sensors/ and sim/: change any of them and the
kernels are compiled afresh. NUMBA_CACHE_DIR, when set, wins.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("controller", "sensors", "sim")


def source_hash() -> str:
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((_ROOT / package).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def configure_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    numba.config.CACHE_DIR = str(base / "ilma" / "numba" / source_hash())  # type: ignore[attr-defined]
