"""``build_report``: every result under a results directory -> ``index.html``, ``index.md``, CSVs, figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.fileio import atomic_write_json, atomic_write_text
from repro.report.collect import collect_runs
from repro.report.papers import PaperSpec, load_papers
from repro.report.profile import load_benchmarks
from repro.report.provenance import dataset_items, provenance_items, run_items
from repro.report.render import render_html, render_markdown, table_csv
from repro.report.tables import (
    Table,
    benchmarks_table,
    key_value_table,
    leaderboard,
    paper_tables,
    runtime_table,
)

if TYPE_CHECKING:
    from repro.report.figures import FigureFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableFile:
    """One table of the report and its CSV (path relative to the report folder)."""

    id: str
    title: str
    kind: str
    csv: str
    n_published: int
    n_ours: int
    status: str = ""


@dataclass(frozen=True)
class ReportIndex:
    """What :func:`build_report` wrote."""

    out_dir: Path
    html: Path
    markdown: Path
    tables: tuple[TableFile, ...]
    figures: tuple[FigureFile, ...]
    n_runs: int
    n_evaluated: int
    problems: tuple[str, ...]

    def table(self, table_id: str) -> TableFile:
        return next(t for t in self.tables if t.id == table_id)

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "html": str(self.html), "markdown": str(self.markdown),
                "n_runs": self.n_runs, "n_evaluated": self.n_evaluated,
                "tables": [{"id": t.id, "title": t.title, "kind": t.kind, "csv": t.csv, "published_rows": t.n_published,
                            "our_rows": t.n_ours, **({"status": t.status} if t.status else {})} for t in self.tables],
                "figures": [{"name": f.name, "png": f.png, "svg": f.svg} for f in self.figures],
                "problems": list(self.problems)}


@dataclass(frozen=True)
class _PaperTable:
    number: int
    table: Table
    other: Table | None


@dataclass(frozen=True)
class _PaperView:
    key: str
    short: str
    title: str
    tables: tuple[_PaperTable, ...]


def _default_benchmarks(results_dir: Path, project_dir: Path) -> list[Path]:
    return [p for p in (project_dir / ".benchmarks", results_dir / ".benchmarks") if p.is_dir()]


def _remove_stale(folder: Path, keep: set[str], suffixes: tuple[str, ...]) -> None:
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and p.suffix in suffixes and p.name not in keep:
            log.info("removing stale report file %s", p)
            p.unlink()


def build_report(results_dir: str | Path, out_dir: str | Path, *, project_dir: str | Path | None = None,
                 benchmarks: Sequence[str | Path] | None = None, warmup: int | None = None,
                 papers: Sequence[PaperSpec] | None = None) -> ReportIndex:
    """Build the report of every result under ``results_dir`` into ``out_dir`` (files written atomically).

    ``project_dir`` (default: the parent of ``results_dir``) is where git, ``params.yaml`` and
    ``.benchmarks/`` are looked up; ``benchmarks`` adds pytest-benchmark JSON files or folders;
    ``warmup`` is the number of leading frames left out of runtime statistics (default 3).
    """
    from repro.report.figures import make_figures

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    project = Path(project_dir) if project_dir is not None else results_dir.resolve().parent
    collection = collect_runs(results_dir, warmup)
    runs = collection.runs
    papers = tuple(papers) if papers is not None else load_papers()
    bench_paths = [Path(p) for p in benchmarks] if benchmarks else _default_benchmarks(results_dir, project)
    bench = benchmarks_table(load_benchmarks(bench_paths))

    views = []
    for p in papers:
        items = []
        for spec in p.tables:
            main, other = paper_tables(p, spec, runs)
            items.append(_PaperTable(spec.number, main, other))
        views.append(_PaperView(p.key, p.short, p.title, tuple(items)))
    board = leaderboard(runs)
    runtime = runtime_table(runs)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    prov = key_value_table("provenance", "Provenance", [("generated", generated), *provenance_items(project, runs)])
    datasets = key_value_table("datasets", "Datasets", dataset_items(runs),
                               "Kind (synthetic / real), content hash recorded by the run, location.")
    run_list = key_value_table("runs", "Runs", run_items(runs), "Every run found: folder, run fingerprint, time.")
    figures = make_figures(runs, out_dir)

    all_tables: list[Table] = [board]
    for v in views:
        for pt in v.tables:
            all_tables += [pt.table] + ([pt.other] if pt.other else [])
    all_tables += [runtime, *([bench] if bench else []), prov, datasets, run_list]
    files = []
    for t in all_tables:
        rel = f"tables/{t.id}.csv"
        atomic_write_text(out_dir / rel, table_csv(t))
        files.append(TableFile(id=t.id, title=t.title, kind=t.kind, csv=rel, n_published=t.n_published,
                               n_ours=t.n_ours, status=t.status))
    n_evaluated = sum(r.evaluated for r in runs)
    context = {"generated": generated, "results_dir": str(results_dir), "n_runs": len(runs), "n_evaluated": n_evaluated,
               "papers": views, "n_paper_tables": sum(len(v.tables) for v in views), "leaderboard": board,
               "runtime": runtime, "benchmarks": bench, "provenance": prov, "datasets": datasets, "runs": run_list,
               "figures": figures, "problems": collection.problems}
    html = atomic_write_text(out_dir / "index.html", render_html(context))
    md = atomic_write_text(out_dir / "index.md", render_markdown(context))
    _remove_stale(out_dir / "tables", {Path(f.csv).name for f in files}, (".csv",))
    _remove_stale(out_dir / "figures", {Path(p).name for f in figures for p in (f.png, f.svg)}, (".png", ".svg"))
    index = ReportIndex(out_dir=out_dir, html=html, markdown=md, tables=tuple(files), figures=tuple(figures),
                        n_runs=len(runs), n_evaluated=n_evaluated, problems=collection.problems)
    atomic_write_json(out_dir / "index.json", index.summary())
    log.info("report written to %s: %d tables, %d figures, %d runs", out_dir, len(files), len(figures), len(runs))
    return index
