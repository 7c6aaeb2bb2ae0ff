"""The report's tables as plain data: paper tables (published rows + ours), the leaderboard, runtime
profiles, benchmarks and provenance. Rendering to HTML / Markdown / CSV is in :mod:`repro.report.render`."""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from repro.report.collect import Run
from repro.report.datasets import display_name
from repro.report.metrics import LABELS, convert, measure, native_unit
from repro.report.papers import Column, OursRow, PaperSpec, Section, TableSpec, metric_of
from repro.report.profile import BenchmarkResult

MISSING = "-"
DEFAULT_DECIMALS = {"percent": 1, "fraction": 2, "s": 3, "ms": 1, "none": 2}
THIS_REPRODUCTION = "This reproduction (pose-repro)"


@dataclass(frozen=True)
class Cell:
    """A displayed cell and, for numbers, its value in the column's unit (for sorting and CSV)."""

    text: str
    value: float | None = None


@dataclass(frozen=True)
class Row:
    """A table row: ``source`` is ``published`` or ``ours``; ``origin`` says where its numbers come from."""

    cells: tuple[Cell, ...]
    source: str
    origin: str
    flags: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class RowGroup:
    label: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Table:
    """A rendered table: header, optional column groups, row groups, and what to say around it."""

    id: str
    kind: str
    title: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    sections: tuple[RowGroup, ...]
    groups: tuple[tuple[str, int], ...] = ()
    caption: str = ""
    setting: str = ""
    notes: tuple[str, ...] = ()
    status: str = ""
    paper: str = ""
    sortable: bool = False

    def rows(self, source: str | None = None) -> list[Row]:
        return [r for s in self.sections for r in s.rows if source is None or r.source == source]

    @property
    def n_published(self) -> int:
        return len(self.rows("published"))

    @property
    def n_ours(self) -> int:
        return len(self.rows("ours"))


def fmt(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def percent(value: float | None, unit: str = "fraction") -> float | None:
    return None if value is None else convert(value, unit, "percent")


def _decimals(spec: TableSpec, col_index: int) -> int:
    col = spec.columns[col_index]
    if col.decimals is not None:
        return col.decimals
    printed = [r.cells[col_index].decimals for s in spec.sections for r in s.rows]
    printed = [d for d in printed if d is not None]
    return max(printed) if printed else DEFAULT_DECIMALS.get(col.unit, 2)


def _groups(columns: Sequence[Column], extra: int) -> tuple[tuple[str, int], ...]:
    if not any(c.group for c in columns):
        return ()
    spans: list[tuple[str, int]] = []
    for c in columns:
        if spans and spans[-1][0] == c.group:
            spans[-1] = (c.group, spans[-1][1] + 1)
        else:
            spans.append((c.group, 1))
    return (*spans, *(("", 1) for _ in range(extra)))


def _task_ok(spec: TableSpec, run: Run) -> bool:
    """A tracking table takes runs of tracking methods or on video splits; any other table takes every
    run but those of tracking methods: per-frame results on a video split are per-image results too."""
    if spec.task == "tracking":
        return run.task == "tracking" or run.split.startswith("video")
    return run.task != "tracking"


def _value(run: Run, metric: str, col: Column) -> tuple[float, float | None] | None:
    m = measure(run, metric, obj=col.obj, objs=col.objs)
    if m is None:
        return None
    unit = native_unit(metric)
    spread = convert(m.spread, unit, col.unit) if m.spread is not None else None
    return convert(m.value, unit, col.unit), spread


def _fill(spec: TableSpec, section: Section, col: Column, ours: OursRow, runs: Sequence[Run],
          decimals: int) -> Cell:
    metric = metric_of(section, col, ours)
    if metric is None:
        return Cell(MISSING)
    if col.datasets:
        by_ds = {}
        for r in runs:
            if r.dataset_id in col.datasets and r.dataset_id not in by_ds:
                v = _value(r, metric, col)
                if v is not None:
                    by_ds[r.dataset_id] = v[0]
        if not by_ds or (col.require_all and len(by_ds) < len(col.datasets)):
            return Cell(MISSING)
        value = statistics.fmean(by_ds.values())
        return Cell(fmt(value, decimals), value)
    want = col.dataset or section.dataset or spec.dataset
    run = next((r for r in runs if want is None or r.dataset_id == want), None)
    got = _value(run, metric, col) if run is not None else None
    if got is None:
        return Cell(MISSING)
    value, spread = got
    if col.format == "pm" and spread is not None:
        return Cell(f"{value:.{decimals}f}±{spread:.{decimals}f}", value)
    return Cell(fmt(value, decimals), value)


def _our_row(spec: TableSpec, section: Section, ours: OursRow, runs: Sequence[Run],
             decimals: Sequence[int]) -> Row | None:
    first = runs[0]
    label_col = spec.label_column()
    cells: list[Cell] = []
    for i, col in enumerate(spec.columns):
        if col.is_text:
            text = ours.label.format(method=first.method) if i == label_col else dict(ours.text).get(col.key, "")
            cells.append(Cell(text))
        else:
            cells.append(_fill(spec, section, col, ours, runs, decimals[i]))
    keys = [c.key for c in spec.columns]
    for i, col in enumerate(spec.columns):
        if col.compute == "mean":
            vals = [cells[keys.index(k)].value for k in col.of]
            if all(v is not None for v in vals):
                value = statistics.fmean(vals)  # type: ignore[arg-type]
                cells[i] = Cell(fmt(value, decimals[i]), value)
    if all(c.value is None for c, col in zip(cells, spec.columns, strict=True) if not col.is_text):
        return None
    datasets = sorted({r.dataset_label for r in runs})
    flags = tuple(dict.fromkeys(f for r in runs for f in r.flags()))
    origin = " · ".join([f"ours: {', '.join(datasets)}", f"weights: {first.weights}",
                         *([f"preset: {first.preset}"] if first.preset != "-" else [])])
    return Row(cells=(*cells, Cell(origin)), source="ours", origin=origin, flags=flags)


def _targets(spec: TableSpec, run: Run) -> list[int | None]:
    """Indices of the sections our row goes into (``None``: the trailing 'this reproduction' group)."""
    if any(s.dataset for s in spec.sections):
        hits = [i for i, s in enumerate(spec.sections) if s.dataset and s.dataset == run.dataset_id]
        return hits or [None]  # type: ignore[return-value]
    if any(s.metric for s in spec.sections):
        return [i for i, s in enumerate(spec.sections) if s.metric]
    return [None]


def _matches(spec: TableSpec, run: Run) -> bool:
    wanted = spec.datasets()
    return not wanted or run.dataset_id in wanted


def _candidates(spec: TableSpec, runs: Sequence[Run]) -> list[tuple[OursRow, Run]]:
    return [(o, r) for o in spec.ours for r in runs
            if fnmatch.fnmatchcase(r.method, o.method) and r.evaluated and _task_ok(spec, r)]


def paper_table(paper: PaperSpec, spec: TableSpec, runs: Sequence[Run]) -> Table:
    """A paper's table in its layout: the published rows, then ours, each row saying where it comes from."""
    decimals = [_decimals(spec, i) for i in range(len(spec.columns))]
    origin = f"published: {paper.short}, Table {spec.number}"
    groups: list[list[Row]] = []
    for s in spec.sections:
        rows = []
        for r in s.rows:
            cells = tuple(Cell(c.text, c.value) for c in r.cells)
            rows.append(Row(cells=(*cells, Cell(origin)), source="published", origin=origin, note=r.note))
        groups.append(rows)
    trailing: list[Row] = []
    status = ""
    if not any(r.method == spec.method for r in runs):
        status = f"no results of {spec.method} yet: only the published rows are shown"
    else:
        candidates = _candidates(spec, runs)
        col_level = any(c.dataset or c.datasets for c in spec.columns)
        buckets: dict[tuple, list[Run]] = {}
        for o, r in candidates:
            if not _matches(spec, r):
                continue
            for target in _targets(spec, r):
                key = (spec.ours.index(o), target, r.method, r.preset, r.weights,
                       None if col_level else (r.dataset, str(r.path)))
                buckets.setdefault(key, []).append(r)
        for (oi, target, *_), bucket in buckets.items():
            if target is None:
                section = replace(spec.sections[-1], metric=None, dataset=None)
            else:
                section = spec.sections[target]
            row = _our_row(spec, section, spec.ours[oi], bucket, decimals)
            if row is not None:
                (trailing if target is None else groups[target]).append(row)
    sections = [RowGroup(s.label, tuple(rows)) for s, rows in zip(spec.sections, groups, strict=True)]
    if trailing:
        sections.append(RowGroup(THIS_REPRODUCTION, tuple(trailing)))
    return Table(id=spec.id, kind="paper", title=f"{paper.short} — Table {spec.number}",
                 columns=(*(c.label for c in spec.columns), "Source"),
                 numeric=(*(not c.is_text for c in spec.columns), False), sections=tuple(sections),
                 groups=_groups(spec.columns, 1), caption=spec.caption, setting=spec.setting, notes=spec.notes,
                 status=status, paper=paper.key)


@dataclass(frozen=True)
class _OtherColumn:
    """A column of the "our runs on other data" table: the metric (``None``: only rows with a
    per-column metric fill it), the column it comes from (dataset-free) and how it is printed."""

    metric: str | None
    col: Column
    decimals: int
    header: str

    def metric_for(self, ours: OursRow) -> str | None:
        return dict(ours.metrics).get(self.col.key) or self.metric


def _other_metrics(spec: TableSpec) -> list[_OtherColumn]:
    """The distinct metrics of a table (per-object columns left out), for runs on other data; a
    column that our rows fill with their own per-column metrics is one column."""
    unit_name = {"percent": " (%)", "fraction": "", "s": " (s)", "ms": " (ms)", "none": ""}
    out: dict[tuple[str | None, str | None, str], _OtherColumn] = {}
    for i, col in enumerate(spec.columns):
        if col.is_text or col.compute or col.obj is not None:
            continue
        per_column = any(col.key in dict(o.metrics) for o in spec.ours)
        names: list[str | None] = [o.metric for o in spec.ours if o.metric]
        if not names:
            names = [col.metric] if col.metric else [s.metric for s in spec.sections if s.metric]
        if per_column and not names:
            names = [None]
        for name in names:
            generic = replace(col, dataset=None, datasets=(), objs="all" if col.objs is not None else None)
            label = col.label if per_column or name is None else LABELS.get(name, name)
            header = f"{label}{' (object mean)' if generic.objs == 'all' else ''}"
            if not header.endswith(unit_name[col.unit]):
                header += unit_name[col.unit]
            key = (name, generic.objs if isinstance(generic.objs, str) else None, col.key if per_column else "")
            out.setdefault(key, _OtherColumn(name, generic, _decimals(spec, i), header))
    return list(out.values())


def other_data_table(paper: PaperSpec, spec: TableSpec, runs: Sequence[Run]) -> Table | None:
    """Our runs of a table's methods on datasets the table is not about (synthetic data, other benchmarks).

    A run makes one row per ours entry it matches, except that entries measuring the same metrics
    (an exact name and a glob, say) give it one row only (the first entry's label)."""
    if not any(r.method == spec.method for r in runs):
        return None
    seen: set[tuple] = set()
    picked: list[tuple[OursRow, Run]] = []
    for o, r in _candidates(spec, runs):
        key = (str(r.path), o.metric, o.metrics)
        if not _matches(spec, r) and key not in seen:
            seen.add(key)
            picked.append((o, r))
    metrics = _other_metrics(spec)
    if not picked or not metrics:
        return None
    rows = []
    for o, r in picked:
        cells = [Cell(o.label.format(method=r.method)), Cell(r.dataset_label)]
        for m in metrics:
            name = m.metric_for(o)
            got = _value(r, name, m.col) if name else None
            cells.append(Cell(fmt(got[0], m.decimals), got[0]) if got else Cell(MISSING))
        if all(c.value is None for c in cells[2:]):
            continue
        origin = f"ours: {r.describe()}"
        rows.append(Row(cells=(*cells, Cell(origin)), source="ours", origin=origin, flags=r.flags()))
    if not rows:
        return None
    wanted = ", ".join(display_name(d) for d in sorted(spec.datasets())) or "-"
    return Table(id=f"{spec.id}-other", kind="other",
                 title=f"{paper.short} — Table {spec.number}: our runs on other data",
                 columns=("Method", "Dataset", *(m.header for m in metrics), "Source"),
                 numeric=(False, False, *(True for _ in metrics), False), sections=(RowGroup("", tuple(rows)),),
                 caption=(f"Runs of the table's methods on data other than the paper's ({wanted}): the same metrics, "
                          "listed apart because they are not comparable cell by cell with the published numbers."),
                 paper=paper.key, sortable=True)


def paper_tables(paper: PaperSpec, spec: TableSpec, runs: Sequence[Run]) -> tuple[Table, Table | None]:
    """A paper table and the table of our runs on other data; the status says when neither has our rows."""
    main = paper_table(paper, spec, runs)
    other = other_data_table(paper, spec, runs)
    if not main.status and not main.n_ours and other is None:
        main = replace(main, status=f"the results of {spec.method} have none of this table's metrics yet")
    return main, other


LEADERBOARD_METRICS: tuple[tuple[str, str], ...] = (
    ("bop:bop19_average_recall", "AR"), ("bop:bop19_average_recall_vsd", "AR_VSD"),
    ("bop:bop19_average_recall_mssd", "AR_MSSD"), ("bop:bop19_average_recall_mspd", "AR_MSPD"),
    ("bop:recall_ad", "ADD(S)@0.1d"), ("bop:auc_adi", "ADD-S AUC"), ("bop:recall_proj", "Proj@5px"),
    ("segm:AP", "mAP (segm)"), ("nocs:IoU25", "IoU25"), ("nocs:IoU50", "IoU50"), ("nocs:IoU75", "IoU75"),
    ("nocs:5deg2cm", "5°2cm"), ("nocs:5deg5cm", "5°5cm"), ("nocs:10deg5cm", "10°5cm"),
    ("nocs:10deg10cm", "10°10cm"),
)


def leaderboard(runs: Sequence[Run]) -> Table:
    """Methods x datasets: every evaluated run with its headline metrics (percent, one decimal) and time."""
    evaluated = [r for r in runs if r.evaluated]
    matrix = []
    for r in evaluated:
        vals = []
        for name, _ in LEADERBOARD_METRICS:
            m = measure(r, name)
            vals.append(percent(m.value, native_unit(name)) if m else None)
        t = r.time_per_image()
        matrix.append((r, vals, t * 1000.0 if t is not None else None))
    keep = [i for i in range(len(LEADERBOARD_METRICS)) if any(v[i] is not None for _, v, _ in matrix)]
    rows = []
    for r, vals, ms in matrix:
        cells = [Cell(r.method), Cell(r.dataset_label), Cell(r.dataset_kind), Cell(r.weights), Cell(r.preset)]
        cells += [Cell(fmt(vals[i], 1), vals[i]) for i in keep]
        cells += [Cell(fmt(ms, 1), ms), Cell("")]
        rows.append(Row(cells=tuple(cells), source="ours", origin=r.describe(), flags=r.flags()))
    headers = ("Method", "Dataset", "Data", "Weights", "Preset", *(f"{LEADERBOARD_METRICS[i][1]} (%)" for i in keep),
               "Time / image (ms)", "Labels")
    numeric = (False,) * 5 + (True,) * (len(keep) + 1) + (False,)
    return Table(id="leaderboard", kind="leaderboard", title="Leaderboard", columns=headers, numeric=numeric,
                 sections=(RowGroup("", tuple(rows)),), sortable=True,
                 caption=("Every evaluated run (method x dataset x preset). Percent with one decimal; AR is the BOP19 "
                          "average recall, ADD(S)@0.1d the recall at 10% of the object diameter, ADD-S AUC the "
                          "PoseCNN-style area under the curve, mAP the BOP22 segmentation AP, IoU/deg/cm the NOCS "
                          "mAPs. Click a header to sort."))


def runtime_table(runs: Sequence[Run]) -> Table:
    """Per method, dataset and stage: median, p90 and max milliseconds after warm-up, throughput, machine."""
    rows = []
    for r in runs:
        p = r.profile
        if p is None:
            continue
        for st in p.stages:
            is_total = st.stage == "total"
            cells = (Cell(r.method), Cell(r.dataset_label), Cell(st.stage),
                     Cell(fmt(st.median * 1e3, 2), st.median * 1e3), Cell(fmt(st.p90 * 1e3, 2), st.p90 * 1e3),
                     Cell(fmt(st.max * 1e3, 2), st.max * 1e3),
                     Cell(fmt(p.fps, 1), p.fps) if is_total else Cell(""),
                     Cell(fmt(p.peak_memory_mb, 0), p.peak_memory_mb) if is_total else Cell(""),
                     Cell(p.device if is_total else ""), Cell(str(r.info.get("machine") or "-") if is_total else ""),
                     Cell(str(p.threads) if is_total and p.threads is not None else ("-" if is_total else "")),
                     Cell(p.source if is_total else ""), Cell(""))
            rows.append(Row(cells=cells, source="ours", origin=r.describe(), flags=r.flags()))
    return Table(id="runtime", kind="runtime", title="Runtime profile",
                 columns=("Method", "Dataset", "Stage", "Median (ms)", "P90 (ms)", "Max (ms)", "Frames/s",
                          "Peak memory (MiB)", "Device", "Machine", "Threads", "Source", "Labels"),
                 numeric=(False, False, False, True, True, True, True, True, False, False, False, False, False),
                 sections=(RowGroup("", tuple(rows)),), sortable=True,
                 caption=("Per-frame seconds by stage after skipping the warm-up frames (from profile.json when the "
                          "profile stage wrote one, else from timings.csv)."))


def benchmarks_table(results: Sequence[BenchmarkResult]) -> Table | None:
    if not results:
        return None
    rows = []
    for b in results:
        cells = (Cell(b.name), Cell(b.group or "-"), *(Cell(fmt(v * 1e3, 3), v * 1e3) for v in
                                                      (b.median, b.mean, b.stddev, b.min, b.max)),
                 Cell(str(b.rounds), float(b.rounds)), Cell(fmt(b.ops, 1), b.ops), Cell(b.datetime[:19] or "-"),
                 Cell(b.machine or "-"), Cell(b.commit or "-"))
        rows.append(Row(cells=cells, source="benchmark", origin=b.file))
    return Table(id="benchmarks", kind="benchmarks", title="Micro-benchmarks (pytest-benchmark)",
                 columns=("Benchmark", "Group", "Median (ms)", "Mean (ms)", "Std (ms)", "Min (ms)", "Max (ms)",
                          "Rounds", "Ops/s", "Date", "Machine", "Commit"),
                 numeric=(False, False, True, True, True, True, True, True, True, False, False, False),
                 sections=(RowGroup("", tuple(rows)),), sortable=True,
                 caption="The newest pytest-benchmark result of each benchmark found.")


def key_value_table(table_id: str, title: str, items: Sequence[tuple[str, str]], caption: str = "") -> Table:
    rows = tuple(Row(cells=(Cell(k), Cell(v)), source="info", origin="") for k, v in items)
    return Table(id=table_id, kind="info", title=title, columns=("Item", "Value"), numeric=(False, False),
                 sections=(RowGroup("", rows),), caption=caption)
