"""Print a compact summary of the pipeline's results (``scripts/main.sh`` runs it after ``dvc repro``):
one line per (method, dataset) with the headline scores in percent and the measured frame rate.

    python -m repro.stages.summary [--results-dir results] [--reports-dir reports]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

HEADLINE = (
    ("bop19", "bop19_average_recall", "AR", 100.0), ("bop19", "bop19_average_recall_vsd", "VSD", 100.0),
    ("bop19", "bop19_average_recall_mssd", "MSSD", 100.0), ("bop19", "bop19_average_recall_mspd", "MSPD", 100.0),
    ("bop19", "recall_ad", "AD", 100.0), ("coco_segm", "AP", "segm AP", 100.0),
    ("nocs", "IoU50", "IoU50", 1.0), ("nocs", "5deg2cm", "5°2cm", 1.0), ("nocs", "10deg5cm", "10°5cm", 1.0),
)
"""(scores group in metrics.json, key, label, factor to percent)."""


def summary_lines(results_dir: Path, reports_dir: Path) -> list[str]:
    lines = []
    for metrics_path in sorted(results_dir.glob("*/*/metrics.json")):
        run = metrics_path.parent
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        parts = [f"{label} {metrics[group][key] * scale:.1f}" for group, key, label, scale in HEADLINE
                 if isinstance(metrics.get(group, {}).get(key), int | float)]
        profile = run / "profile.json"
        if profile.is_file():
            fps = json.loads(profile.read_text(encoding="utf-8")).get("frames_per_second")
            if isinstance(fps, int | float):
                parts.append(f"{fps:.1f} frames/s")
        lines.append(f"{run.parent.name:>16} on {run.name:<20} " + ", ".join(parts))
    if not lines:
        lines.append(f"no evaluated results under {results_dir}")
    index = reports_dir / "index.html"
    lines.append(f"report: {index}" if index.is_file() else f"report: not built ({reports_dir})")
    lines.append("tracking: `repro ui` serves the MLflow UI on http://127.0.0.1:5000")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.stages.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    sys.stdout.write("\n".join(summary_lines(args.results_dir, args.reports_dir)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
