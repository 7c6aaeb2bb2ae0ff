"""The report's figures (seaborn on matplotlib's object API, no pyplot state), written as PNG and SVG.

Recall vs threshold per BOP error, per-object recalls, NOCS AP vs IoU / rotation / translation
thresholds per category, runtime per stage and accuracy vs time. Percent axes use one decimal.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from repro.fileio import atomic_write_bytes
from repro.report.collect import Run
from repro.report.metrics import BOP19_ERRORS

log = logging.getLogger(__name__)

NOCS_CLASSES = ("BG", "bottle", "bowl", "camera", "can", "laptop", "mug", "mean")
_RC = {"svg.hashsalt": "pose-repro", "svg.fonttype": "none", "figure.dpi": 100, "savefig.dpi": 120,
       "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
       "ytick.labelsize": 8}


@dataclass(frozen=True)
class FigureFile:
    """One figure: a title and caption for the report, its PNG and SVG paths (relative to the report)."""

    name: str
    title: str
    caption: str
    png: str
    svg: str


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _run_label(r: Run) -> str:
    return r.method if r.preset in ("-", "") else f"{r.method} ({r.preset})"


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(100, decimals=1))


def _legend_outside(ax: Axes) -> None:
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _save(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        meta = {"Software": None} if ext == "png" else {"Date": None, "Creator": None}
        fig.savefig(buf, format=ext, metadata=meta, bbox_inches="tight")
        atomic_write_bytes(out_dir / "figures" / f"{name}.{ext}", buf.getvalue())
    return FigureFile(name=name, title=title, caption=caption, png=f"figures/{name}.png", svg=f"figures/{name}.svg")


def _by_dataset(runs: Sequence[Run], pred: Callable[[Run], bool]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        if pred(r):
            out.setdefault(r.dataset_label, []).append(r)
    return out


def recall_curves(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Recall vs correctness threshold for VSD, MSSD and MSPD, one figure per dataset."""
    files = []
    groups = _by_dataset(runs, lambda r: any(f"recalls_{e}" in r.scores.get("bop", {}) for e in BOP19_ERRORS))
    for ds, group in groups.items():
        recs = []
        for r in group:
            s = r.scores["bop"]
            for e in BOP19_ERRORS:
                rec, th = s.get(f"recalls_{e}"), s.get(f"thresholds_{e}")
                if not rec or not th:
                    continue
                arr = np.asarray(rec, dtype=np.float64)
                curve = arr.mean(axis=0) if arr.ndim == 2 else arr
                if len(curve) != len(th):
                    continue
                recs += [{"error": e.upper(), "threshold": float(t), "recall": 100.0 * float(v), "run": _run_label(r)}
                         for t, v in zip(th, curve, strict=True)]
        if not recs:
            continue
        df = pd.DataFrame(recs)
        errors = list(dict.fromkeys(df["error"]))
        fig = Figure(figsize=(3.6 * len(errors), 3.2))
        for i, e in enumerate(errors):
            ax = fig.add_subplot(1, len(errors), i + 1)
            sns.lineplot(data=df[df["error"] == e], x="threshold", y="recall", hue="run", marker="o", ax=ax,
                         legend=i == len(errors) - 1)
            ax.set_title(e)
            ax.set_xlabel("threshold (px)" if e == "MSPD" else "threshold (x diameter)")
            ax.set_ylabel("recall")
            ax.set_ylim(0, 100)
            _percent_axis(ax)
            _legend_outside(ax)
        fig.suptitle(f"Recall vs threshold — {ds}", fontsize=10)
        files.append(_save(fig, out_dir, f"recall-thresholds-{slug(ds)}", f"Recall vs threshold — {ds}",
                           "BOP19 recall at each correctness threshold (VSD averaged over its tolerances tau)."))
    return files


def per_object_recalls(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Per-object recall bars (VSD, MSSD, MSPD, ADD(S)), one figure per dataset."""
    files = []
    errs = ("vsd", "mssd", "mspd", "ad")
    groups = _by_dataset(runs, lambda r: any(f"per_object_recall_{e}" in r.scores.get("bop", {}) for e in errs))
    for ds, group in groups.items():
        recs = [{"error": "ADD(S)" if e == "ad" else e.upper(), "object": f"#{k}", "recall": 100.0 * float(v),
                 "run": _run_label(r)}
                for r in group for e in errs
                for k, v in (r.scores["bop"].get(f"per_object_recall_{e}") or {}).items()]
        df = pd.DataFrame(recs)
        df["object"] = pd.Categorical(df["object"], sorted(set(df["object"]), key=lambda x: (len(x), x)))
        errors = list(dict.fromkeys(df["error"]))
        fig = Figure(figsize=(max(3.6, 0.35 * df["object"].nunique() * df["run"].nunique() + 1.5) * len(errors) / 1.6,
                              3.2))
        for i, e in enumerate(errors):
            ax = fig.add_subplot(1, len(errors), i + 1)
            sns.barplot(data=df[df["error"] == e], x="object", y="recall", hue="run", ax=ax,
                        legend=i == len(errors) - 1)
            ax.set_title(e)
            ax.set_xlabel("object id")
            ax.set_ylabel("recall")
            ax.set_ylim(0, 105)
            _percent_axis(ax)
            _legend_outside(ax)
        fig.suptitle(f"Per-object recall — {ds}", fontsize=10)
        files.append(_save(fig, out_dir, f"per-object-recall-{slug(ds)}", f"Per-object recall — {ds}",
                           "Mean recall per object over the thresholds of each error (ADD(S) at 0.1 x diameter)."))
    return files


def nocs_ap_curves(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """AP vs 3D IoU, rotation and translation thresholds per category (the NOCS evaluation's plot)."""
    files = []
    for r in runs:
        s = r.scores.get("nocs", {})
        if not all(k in s for k in ("iou_aps", "pose_aps", "iou_thres_list", "degree_thres_list", "shift_thres_list")):
            continue
        iou_aps = np.asarray(s["iou_aps"], dtype=np.float64)
        pose_aps = np.asarray(s["pose_aps"], dtype=np.float64)
        iou_th = np.asarray(s["iou_thres_list"], dtype=np.float64)
        deg_th = np.asarray(s["degree_thres_list"], dtype=np.float64)
        shift_th = np.asarray(s["shift_thres_list"], dtype=np.float64)
        if iou_aps.ndim != 2 or pose_aps.ndim != 3 or iou_aps.shape[1] != len(iou_th) or \
                pose_aps.shape[1:] != (len(deg_th), len(shift_th)):
            log.warning("%s: NOCS AP arrays have unexpected shapes; no AP curves", r.path)
            continue
        names = NOCS_CLASSES if iou_aps.shape[0] == len(NOCS_CLASSES) else tuple(
            f"class {i}" for i in range(iou_aps.shape[0]))
        recs = []
        for i in range(1, iou_aps.shape[0]):
            recs += [{"panel": "3D IoU", "x": 100.0 * t, "AP": 100.0 * v, "class": names[i]}
                     for t, v in zip(iou_th, iou_aps[i], strict=True)]
            recs += [{"panel": "rotation (degree)", "x": t, "AP": 100.0 * v, "class": names[i]}
                     for t, v in zip(deg_th[:-1], pose_aps[i, :-1, -1], strict=True)]
            recs += [{"panel": "translation (cm)", "x": t, "AP": 100.0 * v, "class": names[i]}
                     for t, v in zip(shift_th[:-1], pose_aps[i, -1, :-1], strict=True)]
        df = pd.DataFrame(recs)
        fig = Figure(figsize=(11, 3.3))
        for j, panel in enumerate(("3D IoU", "rotation (degree)", "translation (cm)")):
            ax = fig.add_subplot(1, 3, j + 1)
            part = df[df["panel"] == panel]
            sns.lineplot(data=part, x="x", y="AP", hue="class", style="class", ax=ax, legend=j == 2,
                         dashes=[(1, 0)] * (len(names) - 2) + [(4, 2)])
            ax.set_xlabel(panel + (" (%)" if panel == "3D IoU" else ""))
            ax.set_ylabel("AP")
            ax.set_ylim(0, 105)
            _percent_axis(ax)
            if panel == "3D IoU":
                _percent_axis(ax, "x")
            _legend_outside(ax)
        title = f"NOCS AP vs thresholds — {_run_label(r)} on {r.dataset_label}"
        fig.suptitle(title, fontsize=10)
        files.append(_save(fig, out_dir, f"nocs-ap-{slug(r.method)}-{slug(r.dataset_label)}-{slug(r.preset)}", title,
                           "AP per category (dashed: mean) against the 3D IoU, rotation and translation thresholds "
                           "(rotation at any translation, translation at any rotation)."))
    return files


def runtime_stages(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Stacked bars: mean milliseconds per stage and frame after warm-up, one bar per run."""
    recs = []
    for r in runs:
        frames = r.frames()
        if not frames:
            continue
        stages = [s for s in dict.fromkeys(k for f in frames for k in f) if s != "total"] or ["total"]
        for st in stages:
            recs.append({"run": f"{_run_label(r)} · {r.dataset_label}", "stage": st,
                         "ms": 1000.0 * float(np.mean([f.get(st, 0.0) for f in frames]))})
    if not recs:
        return []
    df = pd.DataFrame(recs)
    wide = df.pivot_table(index="run", columns="stage", values="ms", aggfunc="sum", sort=False).fillna(0.0)
    fig = Figure(figsize=(8, 0.45 * len(wide) + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    left = np.zeros(len(wide))
    for color, stage in zip(sns.color_palette("deep", len(wide.columns)), wide.columns, strict=True):
        ax.barh(wide.index, wide[stage].to_numpy(), left=left, label=stage, color=color)
        left += wide[stage].to_numpy()
    for y, total in enumerate(left):
        ax.annotate(f"{total:.1f} ms", (total, y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8)
    ax.set_xlabel("mean time per frame (ms)")
    ax.invert_yaxis()
    ax.legend(title="stage", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title("Runtime breakdown per stage (after warm-up)")
    return [_save(fig, out_dir, "runtime-stages", "Runtime breakdown per stage",
                  "Mean milliseconds per frame spent in each stage, warm-up frames skipped (timings.csv).")]


def accuracy_vs_time(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Accuracy against time per image: BOP AR and NOCS 5°5cm mAP."""
    recs = []
    for r in runs:
        t = r.time_per_image()
        if t is None or t <= 0:
            continue
        ar = r.scores.get("bop", {}).get("bop19_average_recall")
        if isinstance(ar, int | float):
            recs.append({"panel": "BOP AR", "ms": 1000 * t, "acc": 100.0 * ar, "run": _run_label(r),
                         "data": r.dataset_kind, "label": f"{r.method} · {r.dataset_label}"})
        n = r.scores.get("nocs", {}).get("5deg5cm")
        if isinstance(n, int | float):
            recs.append({"panel": "NOCS 5°5cm mAP", "ms": 1000 * t, "acc": float(n), "run": _run_label(r),
                         "data": r.dataset_kind, "label": f"{r.method} · {r.dataset_label}"})
    if not recs:
        return []
    df = pd.DataFrame(recs)
    panels = list(dict.fromkeys(df["panel"]))
    hue_order = sorted(set(df["run"]))
    palette = dict(zip(hue_order, sns.color_palette("deep", len(hue_order)), strict=True))
    style_order = sorted(set(df["data"]))
    markers = dict(zip(style_order, ("o", "X", "s"), strict=False))
    fig = Figure(figsize=(4.6 * len(panels) + 1.5, 3.6))
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        part = df[df["panel"] == panel]
        sns.scatterplot(data=part, x="ms", y="acc", hue="run", hue_order=hue_order, palette=palette, style="data",
                        style_order=style_order, markers=markers, s=60, ax=ax, legend=False)
        for (x, y), names in part.groupby(["ms", "acc"])["label"]:
            ax.annotate("\n".join(sorted(set(names))), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("time per image (ms, log scale)")
        ax.set_ylabel(panel)
        ax.set_ylim(0, 105)
        _percent_axis(ax)
    handles = [Line2D([], [], marker="o", linestyle="", color=palette[r], label=r) for r in hue_order]
    handles += [Line2D([], [], marker=markers.get(s, "o"), linestyle="", color="0.3", label=f"{s} data")
                for s in style_order]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle("Accuracy vs time", fontsize=10)
    return [_save(fig, out_dir, "accuracy-vs-time", "Accuracy vs time",
                  "Each run's headline accuracy against its time per image (marker: synthetic / real data).")]


def make_figures(runs: Sequence[Run], out_dir: Path) -> list[FigureFile]:
    """Every figure for ``runs`` under ``out_dir/figures``."""
    evaluated = [r for r in runs if r.evaluated]
    files: list[FigureFile] = []
    with mpl.rc_context(_RC), sns.axes_style("whitegrid"):
        for make in (recall_curves, per_object_recalls, nocs_ap_curves):
            files += make(evaluated, out_dir)
        files += runtime_stages(runs, out_dir)
        files += accuracy_vs_time(evaluated, out_dir)
    log.info("wrote %d figures", len(files))
    return files
