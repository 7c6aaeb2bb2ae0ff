"""Size presets of the synthetic BOP-style dataset: ``smoke`` (seconds, for tests), ``default``
(the main job's data, a couple of minutes on two CPU cores) and ``large``.

Everything that shapes the generated data is a field of a frozen dataclass here, so a dataset is
fully described by (preset, seed, generator version); the config is written next to the data
(``synth_config.json``) and summarised in the dataset card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SplitConfig:
    """Static tabletop scenes of one split (``test`` or ``train_pbr``).

    ``n_objects`` / ``n_distractors`` are inclusive (min, max) counts per scene; with probability
    ``duplicate_prob`` an annotated object gets a second instance (multi-instance targets).
    """

    n_scenes: int
    n_images: int
    n_objects: tuple[int, int] = (3, 5)
    n_distractors: tuple[int, int] = (1, 3)
    duplicate_prob: float = 0.15
    placement_radius: float = 200.0


@dataclass(frozen=True)
class VideoConfig:
    """Video sequences for tracking: a camera orbiting a static arrangement (optionally with
    objects sliding on the table), a passing occluder and a frame-drop protocol.

    ``orbit_deg`` is the azimuth swept over the sequence; ``drop_window`` the fraction of the
    sequence simulated as fast motion, where a drop protocol keeps one frame in ``drop_keep_every``.
    ``occluder_window`` is the fraction of frames during which the occluder crosses the view.
    """

    n_sequences: int
    n_frames: int
    fps: float = 30.0
    orbit_deg: tuple[float, float] = (60.0, 120.0)
    n_moving: int = 1
    occluder: bool = True
    occluder_window: float = 0.35
    drop_window: float = 0.3
    drop_keep_every: int = 3
    n_objects: tuple[int, int] = (3, 5)
    n_distractors: tuple[int, int] = (1, 2)


@dataclass(frozen=True)
class OnboardingConfig:
    """Per-object reference data: ``n_views`` posed, object-centred views (Fibonacci sphere) and
    ``n_static`` STORM-style masked references, at the dataset's image size and intrinsics (the
    camera distance frames the object), on a plain ``background`` colour."""

    n_views: int = 16
    n_static: int = 8
    background: tuple[float, float, float] = (0.92, 0.92, 0.92)


@dataclass(frozen=True)
class SynthConfig:
    """A full synthetic dataset: objects (keys of the object library), image size, splits."""

    name: str
    objects: tuple[str, ...]
    width: int = 640
    height: int = 480
    focal_scale: float = 0.9
    test: SplitConfig = field(default_factory=lambda: SplitConfig(4, 6, n_objects=(4, 6), n_distractors=(2, 3),
                                                                  placement_radius=150.0))
    train: SplitConfig = field(default_factory=lambda: SplitConfig(6, 10, n_objects=(4, 7), n_distractors=(2, 4)))
    video: VideoConfig = field(default_factory=lambda: VideoConfig(2, 30))
    onboarding: OnboardingConfig = field(default_factory=OnboardingConfig)
    depth_scale: float = 0.1
    visib_delta: float = 15.0
    min_visib_fract: float = 0.1
    camera_distance: tuple[float, float] = (550.0, 950.0)
    camera_elevation_deg: tuple[float, float] = (22.0, 70.0)
    camera_roll_deg: float = 8.0
    texture_max_edge: float = 3.0
    rgb_noise_sigma: float = 1.5

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("a synthetic dataset needs at least one object")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)


DEFAULT_OBJECTS: tuple[str, ...] = ("mug", "soda_can", "bottle", "block", "hex_prism", "l_bracket", "drill",
                                    "cereal_box")
LARGE_OBJECTS: tuple[str, ...] = (*DEFAULT_OBJECTS, "bowl", "soup_can", "traffic_cone")

PRESETS: dict[str, SynthConfig] = {
    "smoke": SynthConfig(
        name="smoke", objects=("mug", "soda_can", "block", "cereal_box"), width=320, height=240,
        test=SplitConfig(1, 3, n_objects=(3, 4), n_distractors=(1, 1)),
        train=SplitConfig(1, 3, n_objects=(3, 4), n_distractors=(1, 2)),
        video=VideoConfig(1, 6, n_objects=(3, 3), n_distractors=(1, 1), occluder_window=0.5, drop_window=0.5),
        onboarding=OnboardingConfig(n_views=4, n_static=2),
        texture_max_edge=4.0),
    "default": SynthConfig(name="default", objects=DEFAULT_OBJECTS),
    "large": SynthConfig(
        name="large", objects=LARGE_OBJECTS,
        test=SplitConfig(10, 20, n_objects=(4, 7), n_distractors=(1, 4)),
        train=SplitConfig(20, 25, n_objects=(5, 9), n_distractors=(2, 5)),
        video=VideoConfig(4, 60, n_moving=2, n_objects=(4, 6)),
        onboarding=OnboardingConfig(n_views=42, n_static=12)),
}


def get_preset(name: str, **overrides: Any) -> SynthConfig:
    """The named preset, optionally with top-level fields replaced."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {name!r}; choose from {', '.join(PRESETS)}") from None
    return replace(cfg, **overrides) if overrides else cfg
