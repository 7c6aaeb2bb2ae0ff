"""Reports: the seed papers' tables with their published rows beside ours, a leaderboard, figures,
runtime profiles and provenance, built from any results directory (``repro report``)."""

from repro.report.build import ReportIndex, TableFile, build_report
from repro.report.collect import Collection, Run, collect_runs
from repro.report.papers import PaperSpec, TableSpec, load_papers, parse_paper

__all__ = [
    "Collection",
    "PaperSpec",
    "ReportIndex",
    "Run",
    "TableFile",
    "TableSpec",
    "build_report",
    "collect_runs",
    "load_papers",
    "parse_paper",
]
