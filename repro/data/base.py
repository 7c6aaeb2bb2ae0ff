"""What every dataset reader offers the harness (BOP and NOCS layouts alike)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from repro.errors import DatasetNotFoundError
from repro.types import Frame, ObjectModel, Targets


@runtime_checkable
class PoseDataset(Protocol):
    """A dataset the runner and the conformance kit can iterate.

    ``iter_frames`` yields ``(frame, targets)`` scene by scene, frames in image-id order within a
    scene; frames carry ground truth (``frame.gt`` / ``frame.category_gt``) when ``with_gt``.
    """

    root: Path
    name: str
    format: str

    def scene_ids(self) -> list[int]: ...

    def objects(self) -> Mapping[int, ObjectModel]: ...

    def iter_frames(self, scene_ids: Sequence[int] | None = None, *, with_gt: bool = True,
                    load_masks: bool = False) -> Iterator[tuple[Frame, Targets]]: ...

    def info(self) -> dict[str, Any]: ...


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    """Fail with a message saying what was expected where, if ``path`` is not a directory."""
    if not path.is_dir():
        msg = f"{what} not found: expected a directory at {path}"
        raise DatasetNotFoundError(msg + (f" ({hint})" if hint else ""))
    return path


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        msg = f"{what} not found: expected a file at {path}"
        raise DatasetNotFoundError(msg + (f" ({hint})" if hint else ""))
    return path
