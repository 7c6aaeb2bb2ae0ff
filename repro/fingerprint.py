"""Content fingerprints: of files and folders (datasets, code), of JSON-able configs.

They key resumable work (inference and evaluation shards, onboarding caches) and tag tracked runs:
a shard computed under a different fingerprint is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SKIP_DIRS = frozenset({"__pycache__", ".git", ".dvc", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".tmp")


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(_SKIP_SUFFIXES)]
    return out


def path_fingerprint(paths: Path | str | Iterable[Path | str], *, suffixes: tuple[str, ...] | None = None) -> str:
    """SHA-256 over the relative names and contents of files (folders walked in sorted order).

    ``suffixes`` keeps only files with these endings (e.g. ``(".py",)`` for code). Missing paths
    contribute their name only, so adding the path later changes the fingerprint.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(f"\0path:{p.as_posix()}\n".encode())
        if not p.exists():
            continue
        for f in _files(p):
            if suffixes is not None and not f.name.endswith(suffixes):
                continue
            rel = f.relative_to(p).as_posix() if p.is_dir() else f.name
            with f.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def dataset_fingerprint(root: Path | str) -> str:
    """Content hash of a dataset folder (every file), 16 hex digits."""
    return path_fingerprint(Path(root))[:16]


def config_fingerprint(obj: Any) -> str:
    """Hash of a JSON-able object with sorted keys, 16 hex digits."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
