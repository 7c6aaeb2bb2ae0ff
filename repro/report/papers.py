"""Published reference tables of the seed papers: the data-file format, its loader and its validator.

One YAML file per paper lives in ``repro/report/published/``::

    paper: {key, title, short, source, method}      # method: our registry name of the paper's method
    tables:
      - id: storm-t1                                 # unique over all papers
        number: 1                                    # the paper's table number
        caption: "..."                               # the exact caption
        setting: "..."                               # datasets / protocol in a few words
        unit: percent | fraction                     # how the paper prints its metric values
        dataset: lm                                  # optional: the dataset of every cell
        task: tracking                               # optional: only tracking runs (or video splits) fill it
        label_column: method                         # optional: where our rows' label goes (default: first text)
        ours:                                        # which of our methods make rows, in order
          - {method: storm, label: "STORM (ours)", text: {column-key: text}, metric: "segm:AP50",
             metrics: {column-key: "tom:variants.cosine.accuracy"}}   # per-column metric of this row
        columns:
          - {key, label, kind: text}                 # text column (first one = row label)
          - {key, label, metric: "bop:recall_ad", dataset: lmo, obj: 6, objs: [..] | all,
             datasets: [..], require_all: true, unit: s, decimals: 3, format: pm, group: "..."}
          - {key, label, compute: mean, of: [column keys]}
        sections:
          - {label, dataset, metric, rows: [[cell, ...] | {cells: [...], note: "..."}]}
        notes: ["transcription notes"]

A row lists its cells in column order: text for text columns; for number columns the value as
printed, ``"-"`` where the paper reports none, or ``"98±5"`` for a value with a spread. Numbers
keep their printed text (``0.990`` stays ``0.990``). A metric is ``source:key`` (see
:mod:`repro.report.metrics`); it says which of our scores fills the column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from repro.errors import DataFormatError
from repro.report.datasets import canonical_dataset
from repro.report.metrics import check_metric

UNITS = ("percent", "fraction", "s", "ms", "none")
_PM = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)\s*$")
MISSING = "-"


@dataclass(frozen=True)
class PublishedCell:
    """One printed cell: its text exactly as in the paper and, for numbers, the value (and spread)."""

    text: str
    value: float | None = None
    spread: float | None = None

    @property
    def decimals(self) -> int | None:
        if self.value is None:
            return None
        head = self.text.split("±")[0].strip()
        return len(head.split(".")[1]) if "." in head else 0


@dataclass(frozen=True)
class PublishedRow:
    cells: tuple[PublishedCell, ...]
    note: str = ""


@dataclass(frozen=True)
class Section:
    label: str
    rows: tuple[PublishedRow, ...]
    dataset: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class Column:
    """A table column and, for number columns, how our runs fill it."""

    key: str
    label: str
    kind: str = "number"
    group: str = ""
    metric: str | None = None
    dataset: str | None = None
    obj: int | None = None
    objs: tuple[int, ...] | str | None = None
    datasets: tuple[str, ...] = ()
    require_all: bool = True
    unit: str = "percent"
    decimals: int | None = None
    format: str = "plain"
    compute: str | None = None
    of: tuple[str, ...] = ()

    @property
    def is_text(self) -> bool:
        return self.kind == "text"


@dataclass(frozen=True)
class OursRow:
    """Which of our methods (a glob on the run's method name, i.e. the experiment's entry key) make
    rows of a table, how they are labelled, and which metrics fill the row (``metrics``: per column
    key, overriding ``metric``, which overrides the column's and section's)."""

    method: str
    label: str = "{method}"
    text: tuple[tuple[str, str], ...] = ()
    metric: str | None = None
    metrics: tuple[tuple[str, str], ...] = ()

    def metric_for(self, column_key: str) -> str | None:
        """This row's metric for a column: its per-column one, else its row-wide one."""
        return dict(self.metrics).get(column_key) or self.metric


@dataclass(frozen=True)
class TableSpec:
    id: str
    paper: str
    number: int
    caption: str
    setting: str
    unit: str
    method: str
    columns: tuple[Column, ...]
    sections: tuple[Section, ...]
    ours: tuple[OursRow, ...] = ()
    dataset: str | None = None
    task: str | None = None
    notes: tuple[str, ...] = ()
    label_key: str | None = None

    @property
    def n_rows(self) -> int:
        return sum(len(s.rows) for s in self.sections)

    def datasets(self) -> frozenset[str]:
        """Every dataset a cell of the table is tied to (empty: any dataset fills it)."""
        out = {self.dataset} if self.dataset else set()
        for s in self.sections:
            if s.dataset:
                out.add(s.dataset)
        for c in self.columns:
            if c.dataset:
                out.add(c.dataset)
            out.update(c.datasets)
        return frozenset(out)

    def label_column(self) -> int:
        """Index of the column that holds our rows' labels."""
        if self.label_key:
            return [c.key for c in self.columns].index(self.label_key)
        return next((i for i, c in enumerate(self.columns) if c.is_text), 0)


@dataclass(frozen=True)
class PaperSpec:
    key: str
    title: str
    short: str
    source: str
    method: str
    tables: tuple[TableSpec, ...]


class _Printed(float):
    """A YAML number that remembers how it was written."""

    text: str


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that keeps the printed text of numbers."""


def _construct_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> _Printed:
    value = _Printed(float(loader.construct_scalar(node)))
    value.text = str(node.value)
    return value


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_number)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_number)


class _Checker:
    """Validates one paper file and builds its specs; every problem names the file and the place."""

    def __init__(self, path: str | Path):
        self.path = path

    def fail(self, where: str, msg: str) -> DataFormatError:
        return DataFormatError(self.path, msg, field=where)

    def mapping(self, obj: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
        if not isinstance(obj, dict):
            raise self.fail(where, f"must be a mapping, got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(required) - set(optional))
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(map(str, unknown))}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise self.fail(where, f"missing key(s) {', '.join(missing)}")
        return obj

    def text(self, obj: Any, where: str, *, empty: bool = False) -> str:
        if isinstance(obj, _Printed):
            obj = obj.text
        if not isinstance(obj, str) or (not empty and not obj.strip()):
            raise self.fail(where, "must be a non-empty string" if not empty else "must be a string")
        return " ".join(obj.split())

    def metric(self, obj: Any, where: str) -> str | None:
        if obj is None:
            return None
        name = self.text(obj, where)
        problem = check_metric(name)
        if problem:
            raise self.fail(where, problem)
        return name

    def dataset(self, obj: Any, where: str) -> str | None:
        if obj is None:
            return None
        name = self.text(obj, where)
        canon = canonical_dataset(name)
        if canon is None:
            raise self.fail(where, f"unknown dataset {name!r}")
        return canon

    def paper(self, data: Any) -> PaperSpec:
        top = self.mapping(data, "<top>", ("paper", "tables"))
        p = self.mapping(top["paper"], "paper", ("key", "title", "short", "source", "method"))
        key = self.text(p["key"], "paper.key")
        method = self.text(p["method"], "paper.method")
        if not isinstance(top["tables"], list) or not top["tables"]:
            raise self.fail("tables", "must be a non-empty list")
        tables = tuple(self.table(t, f"tables[{i}]", key, method) for i, t in enumerate(top["tables"]))
        ids = [t.id for t in tables]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise self.fail("tables", f"duplicate table id(s) {', '.join(dup)}")
        return PaperSpec(key=key, title=self.text(p["title"], "paper.title"),
                         short=self.text(p["short"], "paper.short"), source=self.text(p["source"], "paper.source"),
                         method=method, tables=tables)

    def table(self, obj: Any, where: str, paper: str, method: str) -> TableSpec:
        t = self.mapping(obj, where, ("id", "number", "caption", "setting", "unit", "columns", "sections"),
                         ("ours", "dataset", "task", "notes", "method", "label_column"))
        unit = self.text(t["unit"], f"{where}.unit")
        if unit not in ("percent", "fraction"):
            raise self.fail(f"{where}.unit", f"must be percent or fraction, got {unit!r}")
        if not isinstance(t["number"], float) or t["number"] != int(t["number"]) or t["number"] < 1:
            raise self.fail(f"{where}.number", "must be a positive integer")
        cols_raw = t["columns"]
        if not isinstance(cols_raw, list) or len(cols_raw) < 2:
            raise self.fail(f"{where}.columns", "must list at least two columns")
        columns = tuple(self.column(c, f"{where}.columns[{i}]", unit) for i, c in enumerate(cols_raw))
        keys = [c.key for c in columns]
        if len(set(keys)) != len(keys):
            raise self.fail(f"{where}.columns", "column keys must be unique")
        if not any(c.is_text for c in columns):
            raise self.fail(f"{where}.columns", "needs a text column for the row labels")
        for i, c in enumerate(columns):
            for k in c.of:
                if k not in keys or columns[keys.index(k)].is_text:
                    raise self.fail(f"{where}.columns[{i}].of", f"{k!r} is not a number column of this table")
        if not isinstance(t["sections"], list) or not t["sections"]:
            raise self.fail(f"{where}.sections", "must be a non-empty list")
        sections = tuple(self.section(s, f"{where}.sections[{i}]", columns) for i, s in enumerate(t["sections"]))
        ours = tuple(self.ours(o, f"{where}.ours[{i}]", columns) for i, o in enumerate(t.get("ours") or []))
        notes = t.get("notes") or []
        if not isinstance(notes, list):
            raise self.fail(f"{where}.notes", "must be a list of strings")
        task = self.text(t["task"], f"{where}.task") if t.get("task") else None
        label_key = self.text(t["label_column"], f"{where}.label_column") if t.get("label_column") else None
        if label_key is not None and (label_key not in keys or columns[keys.index(label_key)].kind != "text"):
            raise self.fail(f"{where}.label_column", f"{label_key!r} is not a text column")
        return TableSpec(id=self.text(t["id"], f"{where}.id"), paper=paper, number=int(t["number"]),
                         caption=self.text(t["caption"], f"{where}.caption"),
                         setting=self.text(t["setting"], f"{where}.setting"), unit=unit,
                         method=self.text(t.get("method", method), f"{where}.method"), columns=columns,
                         sections=sections, ours=ours, dataset=self.dataset(t.get("dataset"), f"{where}.dataset"),
                         task=task, label_key=label_key,
                         notes=tuple(self.text(n, f"{where}.notes[{i}]") for i, n in enumerate(notes)))

    def column(self, obj: Any, where: str, table_unit: str) -> Column:
        c = self.mapping(obj, where, ("key", "label"), ("kind", "group", "metric", "dataset", "obj", "objs",
                                                         "datasets", "require_all", "unit", "decimals", "format",
                                                         "compute", "of"))
        kind = c.get("kind", "number")
        if kind not in ("text", "number"):
            raise self.fail(f"{where}.kind", f"must be text or number, got {kind!r}")
        unit = self.text(c.get("unit", table_unit), f"{where}.unit")
        if unit not in UNITS:
            raise self.fail(f"{where}.unit", f"must be one of {', '.join(UNITS)}")
        fmt = c.get("format", "plain")
        if fmt not in ("plain", "pm"):
            raise self.fail(f"{where}.format", "must be plain or pm")
        compute = c.get("compute")
        if compute not in (None, "mean"):
            raise self.fail(f"{where}.compute", "only 'mean' is supported")
        if compute and not c.get("of"):
            raise self.fail(f"{where}.of", "compute: mean needs the column keys to average")
        objs = c.get("objs")
        if objs is not None and objs != "all":
            if not isinstance(objs, list) or not objs or not all(isinstance(o, float) and o == int(o) for o in objs):
                raise self.fail(f"{where}.objs", "must be 'all' or a list of object ids")
            objs = tuple(int(o) for o in objs)
        obj_id = c.get("obj")
        if obj_id is not None and not (isinstance(obj_id, float) and obj_id == int(obj_id)):
            raise self.fail(f"{where}.obj", "must be an integer object id")
        decimals = c.get("decimals")
        if decimals is not None and not (isinstance(decimals, float) and decimals == int(decimals) and decimals >= 0):
            raise self.fail(f"{where}.decimals", "must be a non-negative integer")
        datasets = tuple(self.dataset(d, f"{where}.datasets[{i}]") or ""
                         for i, d in enumerate(c.get("datasets") or []))
        return Column(key=self.text(c["key"], f"{where}.key"),
                      label=self.text(c["label"], f"{where}.label", empty=True), kind=kind,
                      group=self.text(c.get("group", ""), f"{where}.group", empty=True),
                      metric=self.metric(c.get("metric"), f"{where}.metric"),
                      dataset=self.dataset(c.get("dataset"), f"{where}.dataset"),
                      obj=int(obj_id) if obj_id is not None else None, objs=objs, datasets=datasets,
                      require_all=bool(c.get("require_all", True)), unit="none" if kind == "text" else unit,
                      decimals=int(decimals) if decimals is not None else None, format=fmt, compute=compute,
                      of=tuple(self.text(k, f"{where}.of") for k in c.get("of") or []))

    def section(self, obj: Any, where: str, columns: Sequence[Column]) -> Section:
        s = self.mapping(obj, where, ("rows",), ("label", "dataset", "metric"))
        if not isinstance(s["rows"], list) or not s["rows"]:
            raise self.fail(f"{where}.rows", "must be a non-empty list")
        rows = tuple(self.row(r, f"{where}.rows[{i}]", columns) for i, r in enumerate(s["rows"]))
        return Section(label=self.text(s.get("label", ""), f"{where}.label", empty=True), rows=rows,
                       dataset=self.dataset(s.get("dataset"), f"{where}.dataset"),
                       metric=self.metric(s.get("metric"), f"{where}.metric"))

    def row(self, obj: Any, where: str, columns: Sequence[Column]) -> PublishedRow:
        note = ""
        if isinstance(obj, dict):
            r = self.mapping(obj, where, ("cells",), ("note",))
            obj, note = r["cells"], self.text(r.get("note", ""), f"{where}.note", empty=True)
        if not isinstance(obj, list):
            raise self.fail(where, "must be a list of cells or {cells, note}")
        if len(obj) != len(columns):
            raise self.fail(where, f"has {len(obj)} cells for {len(columns)} columns")
        cells = tuple(self.cell(v, f"{where}[{i}] ({c.key})", c) for i, (v, c) in enumerate(zip(obj, columns,
                                                                                              strict=True)))
        if not any(c.value is not None for c in cells):
            raise self.fail(where, "has no number")
        return PublishedRow(cells=cells, note=note)

    def cell(self, v: Any, where: str, column: Column) -> PublishedCell:
        if column.is_text:
            return PublishedCell(text=self.text(v, where, empty=True))
        if isinstance(v, _Printed):
            return PublishedCell(text=v.text, value=float(v))
        if isinstance(v, str):
            if v.strip() == MISSING:
                return PublishedCell(text=MISSING)
            m = _PM.match(v)
            if m:
                return PublishedCell(text=v.strip(), value=float(m.group(1)), spread=float(m.group(2)))
        raise self.fail(where, f"must be a number, {MISSING!r} (not reported) or 'value±spread', got {v!r}")

    def ours(self, obj: Any, where: str, columns: Sequence[Column]) -> OursRow:
        o = self.mapping(obj, where, ("method",), ("label", "text", "metric", "metrics"))
        text = o.get("text") or {}
        if not isinstance(text, dict):
            raise self.fail(f"{where}.text", "must map text column keys to text")
        text_keys = {c.key for c in columns if c.is_text}
        for k in text:
            if k not in text_keys:
                raise self.fail(f"{where}.text", f"{k!r} is not a text column")
        metrics = o.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise self.fail(f"{where}.metrics", "must map number column keys to metrics")
        number_keys = {c.key for c in columns if not c.is_text and not c.compute}
        for k in metrics:
            if k not in number_keys:
                raise self.fail(f"{where}.metrics", f"{k!r} is not a number column of this table (computed "
                                "columns follow their inputs)")
        return OursRow(method=self.text(o["method"], f"{where}.method"),
                       label=self.text(o.get("label", "{method}"), f"{where}.label"),
                       text=tuple((str(k), self.text(v, f"{where}.text.{k}", empty=True)) for k, v in text.items()),
                       metric=self.metric(o.get("metric"), f"{where}.metric"),
                       metrics=tuple((str(k), self.metric(v, f"{where}.metrics.{k}") or "")
                                     for k, v in metrics.items()))


def parse_paper(text: str, path: str | Path = "<string>") -> PaperSpec:
    """Parse and validate one paper file; problems raise :class:`DataFormatError` naming the place."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataFormatError(path, f"invalid YAML: {getattr(exc, 'problem', exc)}",
                              line=mark.line + 1 if mark else None) from None
    return _Checker(path).paper(data)


def _published_files() -> Iterator[tuple[str, str]]:
    root = resources.files("repro.report.published")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            yield f"repro/report/published/{entry.name}", entry.read_text(encoding="utf-8")


def load_papers(paths: Sequence[str | Path] | None = None) -> tuple[PaperSpec, ...]:
    """The published tables of every seed paper (the package's data files, or ``paths``)."""
    if paths is None:
        items = list(_published_files())
    else:
        items = [(str(p), Path(p).read_text(encoding="utf-8")) for p in paths]
    papers = tuple(sorted((parse_paper(text, name) for name, text in items), key=lambda p: p.source))
    ids = [t.id for p in papers for t in p.tables]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataFormatError(items[0][0] if items else "<none>", f"duplicate table id(s) {', '.join(dup)}")
    return papers


def metric_of(section: Section, column: Column, ours: OursRow | None) -> str | None:
    """The metric that fills a cell: the ours row's (per column, then row-wide), else the column's,
    else the section's."""
    if column.is_text or column.compute:
        return None
    return (ours.metric_for(column.key) if ours else None) or column.metric or section.metric
