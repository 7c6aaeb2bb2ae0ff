"""The pipeline's configuration: typed views of the composed Hydra config and the derived plan.

``conf/config.yaml`` composes an experiment (``datasets.<name>`` from ``conf/dataset/``,
``methods.<name>`` from ``conf/method/``), tracking and launcher settings. Its ``pipeline`` key is
derived by the ``repro.pipeline`` OmegaConf resolver from those and from the method registry:
which datasets the data stage makes, which (method, dataset) pairs train, infer (and with which
results files) and are evaluated. ``params.yaml`` is this config composed and resolved, so dvc.yaml
can read the plan with its own ``${...}`` templating.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

RESOLVER = "repro.pipeline"
LEVEL_OF_FORMAT = {"bop": "instance", "nocs": "category"}
SCORES_OF_FORMAT = {"bop": "scores_bop.json", "nocs": "scores_nocs.json"}


def project_root(start: Path | None = None) -> Path:
    """The nearest folder (from ``start`` or the working directory) holding ``conf/config.yaml``."""
    base = (start or Path.cwd()).resolve()
    for p in (base, *base.parents):
        if (p / "conf" / "config.yaml").is_file():
            return p
    raise FileNotFoundError(f"no conf/config.yaml in {base} or its parents: run the stages from the project folder")


def to_plain(node: Any) -> Any:
    """A resolved plain Python copy of a config node (dicts, lists, scalars)."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


@dataclass(frozen=True)
class SynthSpec:
    """How the data stage generates a synthetic dataset."""

    kind: str
    preset: str
    seed: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the experiment (``conf/dataset/<name>.yaml``); ``root`` is project-relative."""

    name: str
    format: str
    root: str
    split: str | None = None
    train_split: str | None = None
    synth: SynthSpec | None = None

    def __post_init__(self) -> None:
        if self.format not in LEVEL_OF_FORMAT:
            raise ValueError(f"dataset {self.name!r}: format must be bop or nocs, got {self.format!r}")

    @property
    def level(self) -> str:
        """``instance`` (BOP) or ``category`` (NOCS): the task a method needs to run on it."""
        return LEVEL_OF_FORMAT[self.format]

    @classmethod
    def from_cfg(cls, name: str, node: Mapping[str, Any]) -> DatasetSpec:
        d = to_plain(node)
        synth = d.get("synth")
        return cls(name=name, format=str(d["format"]), root=str(d.get("root") or f"datasets/{name}"),
                   split=d.get("split"), train_split=d.get("train_split"),
                   synth=SynthSpec(str(synth["kind"]), str(synth["preset"]), int(synth.get("seed", 0)))
                   if synth else None)


@dataclass(frozen=True)
class MethodSpec:
    """One method of the experiment: its config file's ``params`` with the chosen preset applied."""

    name: str
    preset: str | None
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, name: str, node: Mapping[str, Any]) -> MethodSpec:
        d = to_plain(node)
        params = OmegaConf.create(d.get("params") or {})
        preset = d.get("preset")
        presets = d.get("presets") or {}
        if preset is not None:
            if preset not in presets:
                raise ValueError(f"method {name!r} has no preset {preset!r} (presets: {', '.join(presets) or 'none'})")
            params = OmegaConf.merge(params, presets[preset] or {})
        return cls(name=name, preset=preset, params=OmegaConf.to_container(params, resolve=True))  # type: ignore[arg-type]


def selection(node: Any) -> list[str] | None:
    """Names chosen by the ``method`` / ``dataset`` key: None (nothing chosen), a name, a list of
    names, or a config of the group (``method=oracle`` on Hydra's command line), named by its ``name``."""
    if node is None:
        return None
    if isinstance(node, DictConfig | Mapping):
        if node.get("name") is None:
            raise ValueError("a selected method/dataset config needs a 'name' key")
        return [str(node["name"])]
    if isinstance(node, ListConfig | list | tuple):
        return [str(x) for x in node]
    return [str(node)]


def _names(cfg: Mapping[str, Any], key: str) -> list[str]:
    """The experiment's methods / datasets, restricted to the ``method`` / ``dataset`` selection."""
    available = list(cfg.get(f"{key}s") or {})
    chosen = selection(cfg.get(key))
    if chosen is None:
        return available
    missing = [c for c in chosen if c not in available]
    if missing:
        raise ValueError(f"{key} {', '.join(missing)} not in the experiment (it has {', '.join(available) or 'none'}); "
                         f"add it with +{key}@{key}s.NAME=NAME")
    return chosen


def dataset_spec(cfg: Mapping[str, Any], name: str) -> DatasetSpec:
    datasets = cfg.get("datasets") or {}
    if name not in datasets:
        raise ValueError(f"dataset {name!r} not in the experiment (it has {', '.join(datasets) or 'none'})")
    return DatasetSpec.from_cfg(name, datasets[name])


def _override_keys(overrides: Sequence[str], group: str) -> list[str]:
    """Keys below ``group.`` set on the command line (``method.preset=exact`` -> ``preset``)."""
    keys = []
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if "=" in ov and key.startswith(group + "."):
            keys.append(key[len(group) + 1:])
    return keys


def stage_node(cfg: DictConfig, group: str, overrides: Sequence[str] = ()) -> tuple[str, DictConfig]:
    """(name, config) of the one method or dataset a stage runs on.

    ``cfg[group]`` is a name (``--params`` mode) or the group config Hydra selected. The experiment's
    config of that name (``cfg[group + "s"][name]``) is used when it has one, with the command line's
    ``group.*`` overrides applied on top; otherwise the selected group config itself.
    """
    chosen = selection(cfg.get(group))
    pool = cfg.get(group + "s") or {}
    if not chosen or len(chosen) != 1:
        raise ValueError(f"say which {group}: {group}=NAME (the experiment has {', '.join(pool) or 'none'})")
    name = chosen[0]
    selected = cfg.get(group)
    if name in pool:
        node = OmegaConf.create(to_plain(pool[name]))
        for key in _override_keys(overrides, group):
            OmegaConf.update(node, key, to_plain(OmegaConf.select(cfg, f"{group}.{key}")), merge=False)
        return name, node
    if isinstance(selected, DictConfig):
        return name, OmegaConf.create(to_plain(selected))
    raise ValueError(f"{group} {name!r} not in the experiment (it has {', '.join(pool) or 'none'})")


def stage_pair(cfg: DictConfig, overrides: Sequence[str] = ()) -> tuple[MethodSpec, DatasetSpec]:
    """The (method, dataset) a per-pair stage runs on (see :func:`stage_node`)."""
    m, mnode = stage_node(cfg, "method", overrides)
    d, dnode = stage_node(cfg, "dataset", overrides)
    return MethodSpec.from_cfg(m, mnode), DatasetSpec.from_cfg(d, dnode)


def _method_code(cls: type, root: Path) -> str:
    """Project-relative path of a method's source package (a DVC dependency)."""
    from repro.inference import method_code_paths

    path = method_code_paths(cls)[0].resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def pipeline_plan(cfg: Mapping[str, Any], root: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """The stage instances of the experiment (see the module docstring), keyed ``<method>-<dataset>``.

    A method runs on a dataset when the dataset's level (BOP: instance, NOCS: category) is one of
    the method's tasks; trainable methods get a train stage on the dataset's ``train_split``. Each
    run names its dataset ``root``, the method's source package ``code``, its ``model`` (the
    checkpoint folder of a trainable method, else ``code`` again: a dependency either way), results
    folder ``out``, the ``predictions`` file it writes and the ``scores`` file evaluation writes.
    """
    from repro.inference import SEGMENTATION, output_files
    from repro.registry import get_method_class

    if root is None:
        try:
            root = project_root()
        except FileNotFoundError:
            root = Path.cwd()
    paths = cfg["paths"]
    dnames = _names(cfg, "dataset")
    mnames = _names(cfg, "method")
    datasets = [dataset_spec(cfg, d) for d in dnames]
    plan: dict[str, dict[str, dict[str, Any]]] = {"data": {}, "train": {}, "infer": {}, "infer_segm": {}, "runs": {}}
    for ds in datasets:
        if ds.synth is not None:
            plan["data"][ds.name] = {"root": ds.root, "kind": ds.synth.kind, "preset": ds.synth.preset}
    for m in mnames:
        caps = get_method_class(m).capabilities
        code = _method_code(get_method_class(m), root)
        for ds in datasets:
            if ds.level not in caps.tasks:
                continue
            key = f"{m}-{ds.name}"
            out = f"{paths['results']}/{m}/{ds.name}"
            checkpoint = f"{paths['checkpoints']}/{m}/{ds.name}" if caps.trainable else None
            if checkpoint is not None:
                plan["train"][key] = {"method": m, "dataset": ds.name, "root": ds.root, "code": code,
                                      "checkpoint": checkpoint}
            files = output_files(ds.format, caps.outputs)
            entry = {"method": m, "dataset": ds.name, "root": ds.root, "code": code, "model": checkpoint or code,
                     "out": out, "predictions": files[0], "scores": SCORES_OF_FORMAT[ds.format]}
            plan["infer_segm" if SEGMENTATION in files else "infer"][key] = entry
            plan["runs"][key] = entry
    return plan


def _resolve_pipeline(*, _root_: DictConfig) -> DictConfig:
    return OmegaConf.create(pipeline_plan(_root_))


def register_resolvers() -> None:
    """Register the ``repro.pipeline`` resolver (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_pipeline)


def compose(overrides: Sequence[str] = (), *, root: Path | None = None) -> DictConfig:
    """``conf/config.yaml`` composed with Hydra overrides (outside any Hydra app), unresolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    root = root or project_root()
    register_resolvers()
    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))
