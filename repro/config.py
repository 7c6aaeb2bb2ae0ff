"""Method configuration: ``conf/method/<name>.yaml`` (params + named presets) plus overrides.

The same files are the Hydra config group ``method/`` used by the pipeline; the CLI composes
them here without Hydra so that ``repro infer --method M --preset P key=value`` works anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repro.errors import DataFormatError


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder (from ``start``, the working directory, or the package) with conf/method/."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent.parent]
    for base in candidates:
        for p in (base, *base.parents):
            if (p / "conf" / "method").is_dir():
                return p
    return None


def method_config(name: str, preset: str | None = None, overrides: Sequence[str] = (),
                  conf_dir: Path | None = None) -> tuple[dict[str, Any], str]:
    """Resolve a method's parameters: yaml ``params``, then ``presets[preset]``, then ``key=value``
    overrides (OmegaConf dot-list syntax). Returns (params, preset name)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if conf_dir is None:
        root = find_project_root()
        conf_dir = root / "conf" if root else None
    path = conf_dir / "method" / f"{name}.yaml" if conf_dir else None
    cfg = OmegaConf.create({"params": {}, "presets": {}})
    if path is not None and path.is_file():
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise DataFormatError(path, f"invalid method config: {' '.join(str(exc).split())}") from None
    params = cfg.params
    chosen = preset or str(cfg.get("preset", "default"))
    if preset is not None:
        if preset not in cfg.presets:
            have = ", ".join(cfg.presets) or "none"
            raise ValueError(f"method {name!r} has no preset {preset!r} (presets: {have})")
        params = OmegaConf.merge(params, cfg.presets[preset])
    for ov in overrides:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like key=value")
    try:
        params = OmegaConf.merge(params, OmegaConf.from_dotlist([o.removeprefix("params.") for o in overrides]))
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad override: {exc}") from None
    return OmegaConf.to_container(params, resolve=True), chosen  # type: ignore[return-value]
