"""Stage ``report``: build the paper tables, leaderboard, figures and runtime profiles.

    python -m repro.stages.report

Runs ``repro report --results-dir <paths.results> --out <paths.reports>`` (the report builder,
:mod:`repro.report`) and logs the reports to MLflow.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from repro.fileio import atomic_write_json
from repro.stages.app import StageContext, run_stage
from repro.stages.config import to_plain

log = logging.getLogger(__name__)

NOT_AVAILABLE = 3
"""``repro`` exits with this code for a command whose work has not landed yet."""


def report(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns what was built."""
    paths = to_plain(ctx.cfg.paths)
    results, reports = ctx.path(paths["results"]), ctx.path(paths["reports"])
    runs = sorted(p.parent for p in results.glob("*/*/run.json"))
    cmd = [sys.executable, "-m", "repro", "report", "--results-dir", str(results), "--out", str(reports)]
    with ctx.tracked("report", {"results_dir": paths["results"], "reports_dir": paths["reports"]}) as tracked:
        proc = subprocess.run(cmd, cwd=ctx.root, check=False)
        if proc.returncode == NOT_AVAILABLE:
            log.warning("`repro report` is not available yet: %s records that no report was built", reports)
            reports.mkdir(parents=True, exist_ok=True)
            atomic_write_json(reports / "STATUS.json", {"built": False, "reason": "repro report is not available yet",
                                                        "runs": [str(r.relative_to(results)) for r in runs]})
        elif proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}")
        files = sorted(p for p in reports.rglob("*") if p.is_file())
        tracked.log_metrics({"n_runs": len(runs), "n_files": len(files)})
        tracked.log_artifact(reports, "reports")
    log.info("report over %d runs -> %s (%d files)", len(runs), reports, len(files))
    return {"runs": len(runs), "files": [str(f) for f in files]}


def main() -> None:
    run_stage("report", report)


if __name__ == "__main__":
    main()
