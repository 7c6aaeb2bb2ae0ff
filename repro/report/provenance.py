"""Where the report's numbers come from: code version, configuration, datasets, packages, machines."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from repro.report.collect import Run

PACKAGES = ("pose-repro", "numpy", "scipy", "torch", "pandas", "matplotlib", "seaborn", "jinja2", "pycocotools",
            "opencv-python-headless", "dvc", "mlflow", "hydra-core")
_HASH_KEYS = ("hash", "sha256", "content_hash", "md5", "fingerprint", "checksum")


def _git(project_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(project_dir), *args], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(project_dir: Path) -> str:
    """``<commit> (dirty)`` of the repository holding ``project_dir``, or ``-`` outside git."""
    commit = _git(project_dir, "rev-parse", "HEAD")
    if not commit:
        return "- (not a git repository)"
    dirty = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    return f"{commit}{' (uncommitted changes)' if dirty else ''}"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_versions() -> list[tuple[str, str]]:
    out = []
    for name in PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def provenance_items(project_dir: Path, runs: Sequence[Run]) -> list[tuple[str, str]]:
    """Key/value provenance of the whole report."""
    items = [("git commit", git_state(project_dir))]
    for name in ("params.yaml", "dvc.lock"):
        p = project_dir / name
        items.append((f"{name} sha256", file_hash(p) if p.is_file() else "- (not found)"))
    items += [("python", platform.python_version()), ("platform", platform.platform()),
              ("machine (report)", platform.node()), ("CPU cores", str(os.cpu_count() or "-"))]
    machines = sorted({str(r.info.get("machine")) for r in runs if r.info.get("machine")})
    items.append(("machines (runs)", ", ".join(machines) or "-"))
    items += [(f"package {n}", v) for n, v in package_versions()]
    return items


def run_items(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """One line per run: where it is, its fingerprint (run.json) and how long it took."""
    out = []
    for r in runs:
        fp = str(r.info.get("fingerprint") or "-")
        secs = r.info.get("seconds")
        took = f"{secs:.1f} s" if isinstance(secs, int | float) else "-"
        out.append((f"{r.method} · {r.dataset_label} · {r.preset}",
                    f"{r.path} · fingerprint {fp[:16]} · {took} · machine {r.info.get('machine') or '-'}"))
    return out


def dataset_items(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """One line per dataset used: its kind and the content hash recorded in run.json (if any)."""
    seen: dict[str, str] = {}
    for r in runs:
        ds = r.info.get("dataset") if isinstance(r.info.get("dataset"), dict) else {}
        digest = next((str(ds[k]) for k in _HASH_KEYS if ds.get(k)), "")
        key = r.dataset_label
        if key not in seen or (digest and "hash not recorded" in seen[key]):
            where = str(ds.get("root") or r.path)
            seen[key] = f"{r.dataset_kind}; {digest or 'hash not recorded in run.json'}; {where}"
    return sorted(seen.items())
