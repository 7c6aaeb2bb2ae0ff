"""Shared fixtures: the golden reference data beside the checkout (../shared/golden)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(os.environ.get("REPRO_GOLDEN_DIR", ROOT.parent / "shared" / "golden"))
GOLDTOY = GOLDEN / "bop" / "dataset" / "goldtoy"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference data not found at {GOLDEN} (set REPRO_GOLDEN_DIR)")
    return GOLDEN


@pytest.fixture(scope="session")
def goldtoy(golden_dir: Path) -> Path:
    return golden_dir / "bop" / "dataset" / "goldtoy"


@pytest.fixture(scope="session")
def renderer():
    """One headless renderer (EGL, else numba) shared by the whole session."""
    from repro.render import get_renderer

    r = get_renderer("auto")
    yield r
    r.close()


@pytest.fixture(scope="session")
def goldtoy_dataset(goldtoy: Path):
    from repro.data.bop import BopDataset

    return BopDataset(goldtoy)
