"""STORM's configuration: one frozen dataclass over the parts' configs, with the paper / cpu / smoke presets.

``preset`` picks each part's preset (``SOMConfig``, ``TOMConfig``, ``Model3DConfig``); the ``som`` /
``tom`` / ``model3d`` mappings override single fields on top of it. Defaults are the paper's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from methods.storm.model3d import CPU_OVERRIDES as MODEL3D_CPU_OVERRIDES
from methods.storm.model3d import Model3DConfig
from methods.storm.som import SOMConfig
from methods.storm.tom import TOMConfig

PRESETS = ("paper", "cpu", "smoke")
SEGMENTERS = ("som", "cosine")
VERIFIERS = ("tom", "none")
TRACK_MODES = ("auto", "always", "never")
TOM_VARIANTS = ("cosine", "no_attention", "attention1", "attention2")


def _model3d_preset(preset: str) -> Model3DConfig:
    """The 3D-model stage per preset: SAM3D in the paper's, TSDF fusion of the posed references offline."""
    return Model3DConfig() if preset == "paper" else Model3DConfig.from_mapping(dict(MODEL3D_CPU_OVERRIDES))


def _part(cls: type, preset: str, overrides: Mapping[str, Any] | None, what: str) -> Any:
    base = _model3d_preset(preset) if cls is Model3DConfig else cls.preset(preset)
    extra = dict(overrides or {})
    if not extra:
        return base
    merged = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **extra}
    try:
        return cls.from_mapping(merged)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"storm.{what}: {exc}") from None


@dataclass(frozen=True)
class StormConfig:
    """Everything STORM's ``PoseMethod`` reads from its config (see conf/method/storm.yaml).

    ``segmenter``: ``som`` (HSFA) or ``cosine`` (training-free feature matching: the annotation-free
    baseline of Table 1); ``verify``: ``tom`` or ``none`` (tracking without failure detection,
    Table 4's baseline); ``track``: ``auto`` (track inside video sequences, ``Frame.video``),
    ``always`` or ``never``; ``references``: ``render`` (views of the object model rendered from
    ``som.n_refs`` uniformly sampled spherical viewpoints, as the paper's BOP evaluation), ``static``
    (the dataset's ``onboarding_static`` reference photos) or a folder laid out like it;
    ``memory_size``: real crops kept per object in TOM's memory pool; ``tom_variants``: the
    classifier variants trained beside the main one for Table 5; ``tom_val_fraction``: scenes of
    the training split held out to measure them.
    """

    preset: str = "paper"
    segmenter: str = "som"
    verify: str = "tom"
    track: str = "auto"
    references: str = "render"
    registrar: str = "render_compare"
    registrar_config: Mapping[str, Any] = field(default_factory=dict)
    som: SOMConfig = field(default_factory=SOMConfig)
    tom: TOMConfig = field(default_factory=TOMConfig)
    model3d: Model3DConfig = field(default_factory=Model3DConfig)
    memory_size: int = 8
    min_mask_pixels: int = 50
    tom_variants: tuple[str, ...] = TOM_VARIANTS
    tom_val_fraction: float = 0.25

    def __post_init__(self) -> None:
        checks = (("preset", PRESETS), ("segmenter", SEGMENTERS), ("verify", VERIFIERS), ("track", TRACK_MODES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"storm: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        unknown = sorted(set(self.tom_variants) - set(TOM_VARIANTS))
        if unknown:
            raise ValueError(f"storm: unknown tom_variants {unknown}; choose from {TOM_VARIANTS}")
        if self.memory_size < 1 or self.min_mask_pixels < 0:
            raise ValueError("storm: memory_size must be >= 1 and min_mask_pixels >= 0")
        if not 0.0 < self.tom_val_fraction < 1.0:
            raise ValueError(f"storm: tom_val_fraction must be in (0, 1), got {self.tom_val_fraction}")
        object.__setattr__(self, "registrar_config", MappingProxyType(dict(self.registrar_config)))
        object.__setattr__(self, "tom_variants", tuple(self.tom_variants))

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> StormConfig:
        """Build from a method config: ``preset`` first, then the parts' overrides; unknown keys fail."""
        d = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"storm: unknown config key(s) {unknown}; known: {sorted(known)}")
        preset = str(d.get("preset", "paper"))
        if preset not in PRESETS:
            raise ValueError(f"storm: preset must be one of {PRESETS}, got {preset!r}")
        d["som"] = _part(SOMConfig, preset, d.get("som"), "som")
        d["tom"] = _part(TOMConfig, preset, d.get("tom"), "tom")
        d["model3d"] = _part(Model3DConfig, preset, d.get("model3d"), "model3d")
        if "tom_variants" in d:
            d["tom_variants"] = tuple(d["tom_variants"] or ())
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (saved beside checkpoints)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v = _plain(dataclasses.asdict(v))
            elif isinstance(v, Mapping):
                v = _plain(dict(v))
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
