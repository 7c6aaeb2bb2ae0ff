"""The ``repro`` command line. Every subcommand prints ``--help``, writes outputs atomically and
exits non-zero with a one-line reason on bad input. Heavy modules are imported inside commands so
that ``repro --help`` and CSV evaluation stay fast and torch-free."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from repro.errors import ReproError

log = logging.getLogger("repro")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _errors_as_exit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures (bad input, missing files) into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ReproError, FileNotFoundError, ValueError, KeyError, NotImplementedError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            click.echo(f"repro: error: {msg}", err=True)
            sys.exit(2)

    return wrapper


def _print_json(obj: Any) -> None:
    from repro.fileio import dumps_json

    click.echo(dumps_json(obj).rstrip())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """pose-repro: one harness for 6D object pose methods, datasets and metrics."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ----------------------------------------------------------------------------- methods


@cli.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_errors_as_exit
def methods_cmd(as_json: bool) -> None:
    """List the registered methods and their capabilities."""
    from repro.registry import available_methods, get_method_class

    rows = []
    for name, target in available_methods().items():
        try:
            rows.append({**get_method_class(name).describe(), "target": target})
        except Exception as exc:  # a broken plug-in must not hide the others
            rows.append({"name": name, "target": target, "error": f"{type(exc).__name__}: {exc}"})
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<20} ERROR {r['error']}")
        else:
            gt = "  [uses ground truth]" if r["uses_ground_truth"] else ""
            click.echo(f"{r['name']:<20} tasks={','.join(r['tasks'])} inputs={','.join(r['inputs']) or '-'} "
                       f"outputs={','.join(r['outputs'])} trainable={r['trainable']}{gt}")


# ----------------------------------------------------------------------------- data


@cli.group("data")
def data_grp() -> None:
    """Dataset tools: summaries, synthetic generation, verification, conversion."""


@data_grp.command("info")
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path), help="Dataset root folder.")
@click.option("--split", default=None, help="BOP split folder (test, test_primesense, ...) or NOCS real/test.")
@click.option("--format", "fmt", default="auto", type=click.Choice(["auto", "bop", "nocs"]))
@click.option("--sensor", default=None, help="BOP24 multi-sensor suffix (e.g. photoneo).")
@_errors_as_exit
def data_info(dataset_dir: Path, split: str | None, fmt: str, sensor: str | None) -> None:
    """Summarise a BOP or NOCS dataset as JSON."""
    from repro.data import open_dataset

    kwargs = {"sensor": sensor} if sensor else {}
    _print_json(open_dataset(dataset_dir, split=split, fmt=fmt, **kwargs).info())


@data_grp.command("synth")
@click.option("--preset", type=click.Choice(["smoke", "default", "large"]), default="default")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["bop", "nocs"]), default="bop")
@click.option("--seed", type=int, default=0)
@click.option("--backend", type=click.Choice(["auto", "egl", "numba", "nvdiffrast"]), default="auto",
              help="Renderer backend (files are byte-identical for the same preset, seed and backend).")
@_errors_as_exit
def data_synth(preset: str, out: Path, kind: str, seed: int, backend: str) -> None:
    """Write a synthetic dataset (BOP or NOCS layout) with a generated dataset card."""
    from repro.data.synth import generate_bop_dataset, generate_nocs_dataset
    from repro.render import get_renderer

    generate = generate_bop_dataset if kind == "bop" else generate_nocs_dataset
    with get_renderer(backend) as renderer:
        try:
            summary = generate(out, preset=preset, seed=seed, renderer=renderer)
        except FileExistsError as exc:
            raise ValueError(str(exc)) from None
    summary.pop("config", None)
    _print_json(summary)


@data_grp.command("verify")
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path))
@click.option("--split", default="test")
@click.option("--backend", type=click.Choice(["auto", "egl", "numba", "nvdiffrast"]), default="auto")
@click.option("--sample-offset", type=float, default=0.5, show_default=True,
              help="Where pixel (u, v) samples the image: (u+s, v+s). 0.5 = bop_toolkit's renderers (BOP "
                   "annotations); 0.0 = the OpenCV pixel-centre convention.")
@click.option("--delta", type=float, default=15.0, show_default=True, help="Visibility tolerance (mm).")
@_errors_as_exit
def data_verify(dataset_dir: Path, split: str, backend: str, sample_offset: float, delta: float) -> None:
    """Re-render every GT object and compare with the stored depth, masks and visibility."""
    from repro.render.verify import verify_dataset

    _print_json(verify_dataset(dataset_dir, split=split, backend=backend, sample_offset=sample_offset, delta=delta))


@data_grp.command("convert-nocs-gt")
@click.option("--src", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folder of official NOCS ground-truth pickles (e.g. data/gts/real_test).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="JSON file to write.")
@click.option("--subset", default="real_test", help="real_test or val (recorded in the JSON).")
@_errors_as_exit
def data_convert_nocs_gt(src: Path, out: Path, subset: str) -> None:
    """Convert the official NOCS GT pickles to the project's JSON (the only place that unpickles)."""
    from repro.data.nocs import convert_nocs_gt_pickles

    click.echo(str(convert_nocs_gt_pickles(src, out, subset=subset)))


# ----------------------------------------------------------------------------- train / infer


def _make_method(name: str, preset: str | None, overrides: tuple[str, ...], seed: int):
    from repro.config import method_config
    from repro.registry import create_method

    params, preset_name = method_config(name, preset, overrides)
    method = create_method(name, params, seed=seed)
    return method, params, preset_name


@cli.command("train")
@click.option("--method", required=True)
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint directory.")
@click.option("--preset", default=None)
@click.option("--split", default="train_pbr")
@click.option("--seed", type=int, default=0)
@click.argument("overrides", nargs=-1)
@_errors_as_exit
def train_cmd(method: str, dataset_dir: Path, out: Path, preset: str | None, split: str, seed: int,
              overrides: tuple[str, ...]) -> None:
    """Train a trainable method and save its checkpoint."""
    from repro.data import open_dataset

    m, params, _ = _make_method(method, preset, overrides, seed)
    with m:
        if not m.capabilities.trainable:
            raise ValueError(f"method {method!r} is not trainable (nothing to train)")
        m.fit(open_dataset(dataset_dir, split=split), params)
        m.save(out)
    click.echo(str(out))


@cli.command("infer")
@click.option("--method", required=True)
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Results directory.")
@click.option("--checkpoint", default=None, type=click.Path(path_type=Path))
@click.option("--preset", default=None)
@click.option("--split", default=None)
@click.option("--seed", type=int, default=0)
@click.option("--scenes", default=None, help="Comma-separated scene ids (default: all).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames (for quick looks).")
@click.argument("overrides", nargs=-1)
@_errors_as_exit
def infer_cmd(method: str, dataset_dir: Path, out: Path, checkpoint: Path | None, preset: str | None,
              split: str | None, seed: int, scenes: str | None, max_frames: int | None,
              overrides: tuple[str, ...]) -> None:
    """Run a method on a dataset; write BOP CSV (+ COCO JSON) or category JSON, and timings."""
    from repro.data import open_dataset
    from repro.inference import run_inference

    m, params, preset_name = _make_method(method, preset, overrides, seed)
    ds = open_dataset(dataset_dir, split=split)
    scene_ids = [int(s) for s in scenes.split(",")] if scenes else None
    with m:
        if checkpoint is not None:
            m.load(checkpoint)
        res = run_inference(m, ds, out, scene_ids=scene_ids, max_frames=max_frames,
                            run_info={"params": params, "preset": preset_name, "seed": seed})
    _print_json(res.summary())


# ----------------------------------------------------------------------------- eval / report / ui


@cli.group("eval")
def eval_grp() -> None:
    """Evaluate results files: BOP19 pose AR, BOP22 COCO AP, NOCS category-level mAP."""


@eval_grp.command("bop")
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path))
@click.option("--results", required=True, type=click.Path(path_type=Path), help="BOP19 results CSV.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Scores JSON to write.")
@click.option("--errors", default="vsd,mssd,mspd", show_default=True,
              help="Comma-separated: vsd, mssd, mspd, ad, add, adi, proj, cus, iou (silhouette IoU). With add and "
                   "adi, the scores also hold STORM's AR (ar_storm: mean ADD / ADD-S AUC over 0..0.1 x diameter).")
@click.option("--split", default="test", show_default=True)
@click.option("--targets", "targets_file", default=None, help="Targets file (dataset root name or path).")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes over images.")
@click.option("--renderer", "renderer_backend", type=click.Choice(["auto", "egl", "numba", "nvdiffrast"]),
              default="auto", show_default=True, help="Renderer for VSD, CUS and IoU.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the batched point errors run.")
@click.option("--backend", type=click.Choice(["repro", "bop_toolkit"]), default="repro", show_default=True,
              help="bop_toolkit delegates to bop_toolkit_lib (when installed) to cross-check.")
@click.option("--errors-table", default=None, type=click.Path(path_type=Path),
              help="Also write the per-estimate errors (.csv or .json).")
@_errors_as_exit
def eval_bop(dataset_dir: Path, results: Path, out: Path, errors: str, split: str, targets_file: str | None,
             workers: int, renderer_backend: str, device: str, backend: str, errors_table: Path | None) -> None:
    """BOP19 pose evaluation (VSD, MSSD, MSPD, ADD family, Proj, CUS) of a results CSV."""
    from repro.fileio import atomic_write_json
    from repro.metrics.bop19 import evaluate_bop

    scores = evaluate_bop(dataset_dir, results, errors=errors, split=split, targets_file=targets_file,
                          workers=workers, renderer_backend=renderer_backend, device=device, backend=backend,
                          errors_table=errors_table)
    atomic_write_json(out, scores)
    keys = [k for k in scores if k.startswith(("bop19_", "recall_", "auc_"))]
    _print_json({k: scores[k] for k in keys})


@eval_grp.command("coco")
@click.option("--dataset-dir", required=True, type=click.Path(path_type=Path))
@click.option("--results", required=True, type=click.Path(path_type=Path), help="BOP22 COCO results JSON.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Scores JSON to write.")
@click.option("--ann-type", type=click.Choice(["segm", "bbox"]), default="segm", show_default=True)
@click.option("--bbox-type", type=click.Choice(["amodal", "modal"]), default="amodal", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--targets", "targets_file", default=None, help="Targets file in the dataset root.")
@_errors_as_exit
def eval_coco(dataset_dir: Path, results: Path, out: Path, ann_type: str, bbox_type: str, split: str,
              targets_file: str | None) -> None:
    """BOP22 2D detection / segmentation AP of a COCO results JSON (bop_toolkit's protocol)."""
    from repro.fileio import atomic_write_json
    from repro.metrics.coco import evaluate_coco

    scores = evaluate_coco(dataset_dir, results, ann_type=ann_type, bbox_type=bbox_type, split=split,
                           targets_file=targets_file)
    atomic_write_json(out, scores)
    _print_json(scores)


@eval_grp.command("nocs")
@click.option("--results", required=True, type=click.Path(path_type=Path),
              help="Official per-image layout (GT + predictions) or predictions only (repro-category-v1).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Scores JSON to write.")
@click.option("--dataset-dir", default=None, type=click.Path(path_type=Path),
              help="NOCS dataset (or GT JSON) to read the ground truth from, for predictions-only results.")
@click.option("--use-matches-for-pose/--all-for-pose", default=True, show_default=True,
              help="Pose AP among IoU@0.1 matches (detect_eval.py, the usual setting) or over all.")
@click.option("--exact", is_flag=True, help="True oriented-box IoU without the original's quirks (NON-STANDARD).")
@_errors_as_exit
def eval_nocs(results: Path, out: Path, dataset_dir: Path | None, use_matches_for_pose: bool, exact: bool) -> None:
    """NOCS category-level 3D IoU and degree/cm mAP (the original evaluation's conventions)."""
    from repro.fileio import atomic_write_json
    from repro.metrics.nocs import evaluate_nocs

    scores = evaluate_nocs(results, dataset_dir=dataset_dir, use_matches_for_pose=use_matches_for_pose, exact=exact)
    atomic_write_json(out, scores)
    summary_keys = ("protocol", "IoU25", "IoU50", "IoU75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm",
                    "10deg10cm", "10deg", "10cm")
    _print_json({k: scores[k] for k in summary_keys if k in scores})


@cli.command("report")
@click.option("--results-dir", required=True, type=click.Path(path_type=Path),
              help="Results folder: results/<method>/<dataset>/ run folders and/or bare BOP CSVs with scores.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report folder to write.")
@click.option("--project-dir", default=None, type=click.Path(path_type=Path),
              help="Where git, params.yaml and .benchmarks/ are looked up (default: parent of --results-dir).")
@click.option("--benchmarks", multiple=True, type=click.Path(path_type=Path),
              help="pytest-benchmark JSON file or folder to fold in (repeatable; default: .benchmarks/).")
@click.option("--warmup", type=int, default=None, help="Leading frames left out of runtime statistics (default 3).")
@_errors_as_exit
def report_cmd(results_dir: Path, out: Path, project_dir: Path | None, benchmarks: tuple[Path, ...],
               warmup: int | None) -> None:
    """Build paper tables (published rows beside ours), the leaderboard, figures, runtime profiles and
    provenance into OUT/index.html and OUT/index.md (plus a CSV of every table)."""
    from repro.report import build_report

    index = build_report(results_dir, out, project_dir=project_dir, benchmarks=benchmarks or None, warmup=warmup)
    summary = index.summary()
    _print_json({"html": summary["html"], "markdown": summary["markdown"], "n_runs": summary["n_runs"],
                 "n_evaluated": summary["n_evaluated"], "tables": len(summary["tables"]),
                 "figures": len(summary["figures"]), "problems": summary["problems"]})


@cli.command("ui")
@click.option("--port", type=int, default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--project-dir", default=None, type=click.Path(path_type=Path, file_okay=False),
              help="Project whose mlflow.db to serve (default: the one containing the working directory).")
@_errors_as_exit
def ui_cmd(port: int, project_dir: Path | None) -> None:
    """Serve the MLflow UI on 127.0.0.1 for the project's tracking store (MLFLOW_TRACKING_URI wins);
    Ctrl-C (or SIGTERM) stops the server's whole process group."""
    from repro.stages.config import project_root
    from repro.tracking import serve_ui

    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    try:
        root = project_root(project_dir)
    except FileNotFoundError:
        root = (project_dir or Path.cwd()).resolve()
    sys.exit(serve_ui(root, port=port))


def main() -> None:
    cli(prog_name="repro")
