"""The ``repro`` command line: help everywhere, JSON contracts, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from repro.cli import cli
from repro.results import read_bop_csv

SUBCOMMANDS = [[], ["methods"], ["data"], ["data", "info"], ["data", "synth"], ["data", "verify"],
               ["data", "convert-nocs-gt"], ["train"], ["infer"], ["eval"], ["eval", "bop"], ["eval", "coco"],
               ["eval", "nocs"], ["report"], ["ui"]]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a) or "repro")
def test_every_subcommand_has_help(args):
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "repro", "--help"], capture_output=True, text=True, check=True)
    assert "infer" in out.stdout


def test_methods_json():
    res = CliRunner().invoke(cli, ["methods", "--json"])
    rows = json.loads(res.output)
    oracle = next(r for r in rows if r["name"] == "oracle")
    assert oracle["uses_ground_truth"] and oracle["task"] == "instance"


def test_data_info_goldtoy(goldtoy):
    res = CliRunner().invoke(cli, ["data", "info", "--dataset-dir", str(goldtoy)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert {k: info[k] for k in ("format", "n_scenes", "n_images", "n_gt", "n_targets", "n_target_instances",
                                 "obj_ids")} == {"format": "bop", "n_scenes": 2, "n_images": 9, "n_gt": 64,
                                                 "n_targets": 44, "n_target_instances": 56,
                                                 "obj_ids": [1, 2, 3, 4, 6, 9]}


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    res = CliRunner().invoke(cli, ["data", "info", "--dataset-dir", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "not found" in res.stderr
    res = CliRunner().invoke(cli, ["infer", "--method", "nope", "--dataset-dir", str(tmp_path), "--out", "x"])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.stderr


def test_data_verify_goldtoy_meets_acceptance(goldtoy):
    res = CliRunner().invoke(cli, ["data", "verify", "--dataset-dir", str(goldtoy)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["depth_within_1mm"] >= 0.995 and out["mask_iou_min"] >= 0.99
    assert out["visib_fract_max_abs_diff"] <= 0.01


def test_eval_bop_golden(golden_dir, tmp_path):
    bop = golden_dir / "bop"
    res = CliRunner().invoke(cli, ["eval", "bop", "--dataset-dir", str(bop / "dataset/goldtoy"), "--results",
                                   str(bop / "results/goldpose_goldtoy-test.csv"), "--out", str(tmp_path / "s.json"),
                                   "--errors", "vsd,mssd,mspd,ad"])
    assert res.exit_code == 0, res.output
    ref = json.loads((bop / "eval/goldpose_goldtoy-test/scores_bop19.json").read_text())
    got = json.loads((tmp_path / "s.json").read_text())
    for key in ("bop19_average_recall", "bop19_average_recall_mssd", "bop19_average_recall_mspd",
                "bop19_average_recall_vsd", "bop19_average_time_per_image"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    assert got["recall_ad"] == pytest.approx(0.6071428571428571, abs=1e-12)


def test_eval_coco_and_nocs_write_golden_scores(golden_dir, tmp_path):
    bop = golden_dir / "bop"
    res = CliRunner().invoke(cli, ["eval", "coco", "--dataset-dir", str(bop / "dataset/goldtoy"), "--results",
                                   str(bop / "results/goldsegm_goldtoy-test.json"), "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    ref = json.loads((bop / "eval/goldsegm_goldtoy-test/scores_bop22_coco_segm.json").read_text())
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["AP"] == pytest.approx(ref["AP"], abs=1e-6)
    res = CliRunner().invoke(cli, ["eval", "nocs", "--results", str(golden_dir / "nocs/inputs.json"), "--out",
                                   str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "n.json").read_text())
    assert got["protocol"] == "nocs" and got["IoU25"] == pytest.approx(66.2795, abs=1e-4)


def test_infer_with_preset_and_overrides(goldtoy, tmp_path):
    res = CliRunner().invoke(cli, ["infer", "--method", "oracle", "--dataset-dir", str(goldtoy), "--out",
                                   str(tmp_path / "r"), "--scenes", "1", "drop_prob=1.0"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_frames"] == 5 and summary["n_estimates"] == 0
    assert read_bop_csv(tmp_path / "r" / "estimates.csv") == []
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["params"]["drop_prob"] == 1.0 and run["provenance"]["notes"] == "ground-truth upper bound"
    res = CliRunner().invoke(cli, ["infer", "--method", "oracle", "--dataset-dir", str(goldtoy), "--out",
                                   str(tmp_path / "r2"), "--preset", "nope"])
    assert res.exit_code == 2 and "has no preset 'nope'" in res.stderr


def test_train_refuses_untrainable(goldtoy, tmp_path):
    res = CliRunner().invoke(cli, ["train", "--method", "oracle", "--dataset-dir", str(goldtoy), "--split", "test",
                                   "--out", str(tmp_path / "ck")])
    assert res.exit_code == 2 and "not trainable" in res.stderr
    assert not (tmp_path / "ck").exists()
