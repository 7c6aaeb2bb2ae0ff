"""The ``PoseMethod`` interface every method implements, and its declared ``Capabilities``.

A method is prepared in up to three steps — ``fit`` (optional training), ``onboard`` (per-object
preparation for a set of objects), ``reset`` (start of a video sequence) — and then called once
per frame with ``predict``. The harness (runner, conformance kit, CLI) only talks to methods
through this class.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from repro.types import Frame, ObjectModel, Prediction, Targets, Task

INPUTS = frozenset({"rgb", "depth", "cad_model", "reference_images", "video"})
OUTPUTS = frozenset({"pose", "mask", "box", "category"})
TASKS = frozenset({"instance", "category", "tracking"})


class NotTrainableError(RuntimeError):
    """Raised by ``fit``/``save``/``load`` on a method that has nothing to train."""


@dataclass(frozen=True)
class Capabilities:
    """What a method does and what it needs.

    ``tasks``: instance | category | tracking (a method may serve several; the first is primary).
    ``inputs``: subset of rgb, depth, cad_model, reference_images, video.
    ``outputs``: subset of pose, mask, box, category.
    ``trainable``: has ``fit``/``save``/``load``.
    ``uses_ground_truth``: an upper-bound baseline that reads the frame's annotations; every table
    labels it so. ``timing_keys``: stage names ``predict`` always reports.
    """

    tasks: tuple[Task, ...] = ("instance",)
    inputs: frozenset[str] = frozenset({"rgb"})
    outputs: frozenset[str] = frozenset({"pose"})
    trainable: bool = False
    uses_ground_truth: bool = False
    timing_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", frozenset(self.inputs))
        object.__setattr__(self, "outputs", frozenset(self.outputs))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for name, values, allowed in (("tasks", set(self.tasks), TASKS), ("inputs", self.inputs, INPUTS),
                                      ("outputs", self.outputs, OUTPUTS)):
            unknown = set(values) - allowed
            if unknown:
                raise ValueError(f"Capabilities.{name}: unknown {sorted(unknown)}; allowed {sorted(allowed)}")
        if not self.tasks:
            raise ValueError("Capabilities.tasks must name at least one task")

    @property
    def task(self) -> Task:
        """The primary task."""
        return self.tasks[0]

    @property
    def is_video(self) -> bool:
        return "tracking" in self.tasks or "video" in self.inputs

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "tasks": list(self.tasks), "inputs": sorted(self.inputs),
                "outputs": sorted(self.outputs), "trainable": self.trainable,
                "uses_ground_truth": self.uses_ground_truth, "timing_keys": list(self.timing_keys)}


@dataclass(frozen=True)
class Provenance:
    """How a method's numbers were made, shown beside every row it produces.

    ``weights``: "none" (no learned parts), "from-scratch" (trained here) or "pretrained"
    (published weights loaded from a local path); ``preset`` is the configuration preset name.
    """

    preset: str = "default"
    weights: str = "none"
    backbone: str = ""
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        parts = [self.preset, self.weights]
        if self.backbone:
            parts.append(self.backbone)
        return ", ".join(parts)


class PoseMethod(abc.ABC):
    """Base class of every method. Subclasses set ``name`` and ``capabilities`` and implement
    ``predict``; the other calls have sensible defaults for methods that do not need them.

    Methods take their configuration as a plain mapping (a resolved Hydra config) and an explicit
    ``seed``: there is no global random state.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        self.cfg: dict[str, Any] = dict(cfg or {})
        self.seed = int(seed)

    def provenance(self) -> Provenance:
        """Labels for reports; learned methods override this to report preset and weights."""
        return Provenance()

    def fit(self, train_data: Any, cfg: Mapping[str, Any] | None = None) -> None:
        """Train on ``train_data``. Only methods with ``capabilities.trainable``."""
        raise NotTrainableError(f"method {self.name!r} has nothing to train")

    def save(self, directory: str | Path) -> None:
        """Write a checkpoint (safe formats only; loaded with ``weights_only=True``)."""
        raise NotTrainableError(f"method {self.name!r} has no checkpoint to save")

    def load(self, directory: str | Path) -> None:
        """Read a checkpoint written by ``save``."""
        raise NotTrainableError(f"method {self.name!r} has no checkpoint to load")

    def onboard(self, objects: Mapping[int, ObjectModel], cache_dir: str | Path | None = None) -> None:  # noqa: B027
        """Prepare for these objects (templates, reference database, reconstruction).

        ``cache_dir``, when given, is where the method may keep results keyed by each object's
        ``content_hash``. The default does nothing.
        """

    def reset(self, sequence_id: int | None = None) -> None:  # noqa: B027
        """Forget all per-sequence state (tracking methods); called at each sequence start."""

    @abc.abstractmethod
    def predict(self, frame: Frame, targets: Targets) -> Prediction:
        """Estimate the targets in one frame."""

    def close(self) -> None:  # noqa: B027
        """Release resources held across frames (renderer contexts, GPU memory). Idempotent; the
        harness calls it when it is done with the method (``with method: ...``)."""

    def __enter__(self) -> PoseMethod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, **cls.capabilities.to_dict(), "doc": (cls.__doc__ or "").strip().split("\n")[0]}


def objects_hash(objects: Iterable[ObjectModel]) -> str:
    """A content hash of a set of objects (order-independent), for onboarding caches."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(f"{o.obj_id}:{o.content_hash}" for o in objects):
        h.update(key.encode())
    return h.hexdigest()[:16]
