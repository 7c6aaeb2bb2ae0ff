"""The pipeline's configuration: typed views of the composed Hydra config and the derived plan.

``conf/config.yaml`` composes an experiment (``datasets.<name>`` from ``conf/dataset/``,
``methods.<key>`` from ``conf/method/``), tracking and launcher settings. Its ``pipeline`` key is
derived by the ``repro.pipeline`` OmegaConf resolver from those and from the method registry:
which datasets the data stage makes, which (method, dataset) pairs train, infer (and with which
results files) and are evaluated. ``params.yaml`` is this config composed and resolved, so dvc.yaml
can read the plan with its own ``${...}`` templating.

A method entry ``methods.<key>`` is one *run name* (results, checkpoints, stage keys, tracking tags):
its ``name`` is the registered method class (default: the key), so one method can run as several
named variants. Optional entry keys: ``datasets`` (only run on these datasets of the experiment) and
``checkpoint_from`` (no training: use the checkpoint of that other trainable entry). Optional dataset
keys: ``train_from`` (trainable methods use the checkpoint trained on that other dataset) and
``targets`` (a targets file in the dataset root, for inference and evaluation).
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
    train_from: str | None = None
    targets: str | None = None

    def __post_init__(self) -> None:
        if self.format not in LEVEL_OF_FORMAT:
            raise ValueError(f"dataset {self.name!r}: format must be bop or nocs, got {self.format!r}")
        if self.targets is not None and self.format != "bop":
            raise ValueError(f"dataset {self.name!r}: targets files are a BOP feature (format is {self.format!r})")
        if self.train_from == self.name:
            raise ValueError(f"dataset {self.name!r}: train_from names the dataset itself")

    @property
    def train_dataset(self) -> str:
        """The dataset whose checkpoints trainable methods use on this one."""
        return self.train_from or self.name

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
                   if synth else None,
                   train_from=str(d["train_from"]) if d.get("train_from") else None,
                   targets=str(d["targets"]) if d.get("targets") else None)


def _name_list(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{where} must be a non-empty list of dataset names, got {value!r}")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of the experiment: its config file's ``params`` with the chosen preset applied.

    ``name`` is the entry's key (the run name), ``method_class`` the registered method it runs.
    """

    name: str
    preset: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    method_class: str = ""
    datasets: tuple[str, ...] | None = None
    checkpoint_from: str | None = None

    def __post_init__(self) -> None:
        if not self.method_class:
            object.__setattr__(self, "method_class", self.name)
        if self.checkpoint_from == self.name:
            raise ValueError(f"method entry {self.name!r}: checkpoint_from names the entry itself")

    @property
    def checkpoint_key(self) -> str:
        """The entry whose checkpoints this one loads."""
        return self.checkpoint_from or self.name

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
        return cls(name=name, preset=preset, params=OmegaConf.to_container(params, resolve=True),  # type: ignore[arg-type]
                   method_class=str(d.get("name") or name),
                   datasets=_name_list(d.get("datasets"), f"method entry {name!r}: datasets"),
                   checkpoint_from=str(d["checkpoint_from"]) if d.get("checkpoint_from") else None)


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


def method_entries(cfg: Mapping[str, Any]) -> dict[str, MethodSpec]:
    """Every method entry of the experiment by key (presets applied), checked against its datasets:
    ``datasets`` must name datasets of the experiment, ``checkpoint_from`` another entry that trains."""
    from repro.registry import get_method_class

    all_datasets = list(cfg.get("datasets") or {})
    specs = {str(k): MethodSpec.from_cfg(str(k), v) for k, v in (cfg.get("methods") or {}).items()}
    for key, spec in specs.items():
        missing = [d for d in spec.datasets or () if d not in all_datasets]
        if missing:
            raise ValueError(f"method entry {key!r}: datasets {', '.join(missing)} not in the experiment "
                             f"(it has {', '.join(all_datasets) or 'none'})")
        src = spec.checkpoint_from
        if src is None:
            continue
        if src not in specs:
            raise ValueError(f"method entry {key!r}: checkpoint_from {src!r} is not a method entry of the experiment "
                             f"(it has {', '.join(specs)})")
        if not get_method_class(specs[src].method_class).capabilities.trainable:
            raise ValueError(f"method entry {key!r}: checkpoint_from {src!r} is not trainable "
                             f"({specs[src].method_class} has no checkpoints)")
        if specs[src].checkpoint_from is not None:
            raise ValueError(f"method entry {key!r}: checkpoint_from {src!r} trains nothing itself (it uses "
                             f"checkpoint_from {specs[src].checkpoint_from!r}); name that entry instead")
        if not get_method_class(spec.method_class).capabilities.trainable:
            raise ValueError(f"method entry {key!r}: checkpoint_from is set but {spec.method_class} is not trainable")
    return specs


def dataset_entries(cfg: Mapping[str, Any]) -> dict[str, DatasetSpec]:
    """Every dataset of the experiment by name, with ``train_from`` checked."""
    specs = {str(k): DatasetSpec.from_cfg(str(k), v) for k, v in (cfg.get("datasets") or {}).items()}
    for name, ds in specs.items():
        src = ds.train_from
        if src is None:
            continue
        if src not in specs:
            raise ValueError(f"dataset {name!r}: train_from {src!r} is not a dataset of the experiment "
                             f"(it has {', '.join(specs)})")
        if specs[src].train_from is not None:
            raise ValueError(f"dataset {name!r}: train_from {src!r} trains on {specs[src].train_from!r} itself; "
                             "name that dataset instead")
    return specs


def pipeline_plan(cfg: Mapping[str, Any], root: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """The stage instances of the experiment (see the module docstring), keyed ``<method key>-<dataset>``.

    A method entry runs on a dataset (of its ``datasets``, when it lists them) when the dataset's
    level (BOP: instance, NOCS: category) is one of its method class's tasks. Trainable entries load
    the checkpoint of entry ``checkpoint_from`` (default: themselves) trained on the dataset's
    ``train_from`` (default: the dataset itself, on its ``train_split``); every checkpoint a run
    loads gets a train stage. Each run names its dataset ``root``, the method's source package
    ``code``, its ``model`` (the checkpoint folder of a trainable method, else ``code`` again: a
    dependency either way), results folder ``out``, the ``predictions`` file it writes and the
    ``scores`` file evaluation writes.
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
    all_datasets = dataset_entries(cfg)
    entries = method_entries(cfg)
    datasets = [all_datasets[d] for d in dnames]
    plan: dict[str, dict[str, dict[str, Any]]] = {"data": {}, "train": {}, "infer": {}, "infer_segm": {}, "runs": {}}
    used: dict[str, DatasetSpec] = {}
    trains: dict[str, dict[str, Any]] = {}
    for m in mnames:
        spec = entries[m]
        cls = get_method_class(spec.method_class)
        caps = cls.capabilities
        code = _method_code(cls, root)
        for ds in datasets:
            if ds.level not in caps.tasks or (spec.datasets is not None and ds.name not in spec.datasets):
                continue
            key = f"{m}-{ds.name}"
            out = f"{paths['results']}/{m}/{ds.name}"
            checkpoint = None
            if caps.trainable:
                src, train_ds = entries[spec.checkpoint_key], all_datasets[ds.train_dataset]
                checkpoint = f"{paths['checkpoints']}/{src.name}/{train_ds.name}"
                trains[f"{src.name}-{train_ds.name}"] = {
                    "method": src.name, "dataset": train_ds.name, "root": train_ds.root,
                    "code": _method_code(get_method_class(src.method_class), root), "checkpoint": checkpoint}
                used[train_ds.name] = train_ds
            used[ds.name] = ds
            files = output_files(ds.format, caps.outputs)
            entry = {"method": m, "dataset": ds.name, "root": ds.root, "code": code, "model": checkpoint or code,
                     "out": out, "predictions": files[0], "scores": SCORES_OF_FORMAT[ds.format]}
            plan["infer_segm" if SEGMENTATION in files else "infer"][key] = entry
            plan["runs"][key] = entry
    plan["train"] = dict(sorted(trains.items()))
    for ds in [*datasets, *(d for n, d in all_datasets.items() if n in used and n not in dnames)]:
        if ds.synth is not None:
            plan["data"][ds.name] = {"root": ds.root, "kind": ds.synth.kind, "preset": ds.synth.preset}
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
