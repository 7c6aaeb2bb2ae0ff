"""The published-number data files: they load, validate, and agree with the seed papers' text."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from repro.errors import DataFormatError
from repro.report.datasets import canonical_dataset, dataset_kind
from repro.report.metrics import check_metric, convert
from repro.report.papers import load_papers, parse_paper

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"

#: table id -> published rows, counted by hand from the papers (a cross-check of the transcription)
EXPECTED_ROWS = {
    "storm-t1": 6, "storm-t2": 12, "storm-t3": 3, "storm-t4": 2, "storm-t5": 4, "storm-t6": 2, "storm-t7": 3,
    "gspose-t1": 9, "gspose-t2": 16, "gspose-t3": 6, "gspose-t4": 4, "gspose-t5": 4, "gspose-t7": 11, "gspose-t9": 6,
    "coop-t1": 18, "coop-t2": 8, "coop-t3": 14, "coop-t4": 3,
    "seqpose-t1": 9, "seqpose-t2": 7, "seqpose-t3": 13,
    "zeroshot-t1": 9, "zeroshot-t2": 5, "zeroshot-t3": 10,
}
PM = re.compile(r"^-?\d+(\.\d+)?±\d+(\.\d+)?$")


def _raw_files() -> list[tuple[str, dict]]:
    root = resources.files("repro.report.published")
    files = sorted((e for e in root.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name)
    return [(e.name, yaml.safe_load(e.read_text(encoding="utf-8"))) for e in files]


def test_every_paper_and_table_is_present():
    papers = load_papers()
    assert [p.key for p in papers] == ["storm", "gspose", "coop", "seqpose", "zeroshot"]
    counts = {t.id: t.n_rows for p in papers for t in p.tables}
    assert counts == EXPECTED_ROWS


def test_raw_data_files_are_complete():
    """Independently of the loader: caption, columns, and rows of numbers or explicit '-'."""
    for name, data in _raw_files():
        for t in data["tables"]:
            where = f"{name}:{t['id']}"
            assert t["caption"].strip() and t["setting"].strip(), where
            assert isinstance(t["number"], int) and t["number"] >= 1, where
            cols = t["columns"]
            assert len(cols) >= 2 and all(c["key"] and "label" in c for c in cols), where
            kinds = [c.get("kind", "number") for c in cols]
            assert "text" in kinds and "number" in kinds, where
            for s in t["sections"]:
                for row in s["rows"]:
                    cells = row["cells"] if isinstance(row, dict) else row
                    assert len(cells) == len(cols), f"{where}: {cells}"
                    numbers = 0
                    for cell, kind in zip(cells, kinds, strict=True):
                        if kind == "text":
                            assert isinstance(cell, str), f"{where}: {cell!r}"
                        elif isinstance(cell, int | float) and not isinstance(cell, bool):
                            numbers += 1
                        else:
                            assert cell == "-" or PM.match(str(cell)), f"{where}: {cell!r}"
                    assert numbers, f"{where}: row without numbers {cells}"


def test_metric_and_dataset_mapping_is_valid():
    for p in load_papers():
        for t in p.tables:
            assert t.ours, t.id
            assert t.ours[0].method == p.method or any(o.method == p.method for o in t.ours), t.id
            for c in t.columns:
                if c.metric:
                    assert check_metric(c.metric) is None
                for d in (c.dataset, *c.datasets):
                    assert d is None or canonical_dataset(d) == d


def test_columns_fill_from_the_right_scores():
    papers = {t.id: t for p in load_papers() for t in p.tables}
    coop = {c.key: c for c in papers["coop-t1"].columns}
    assert (coop["lmo"].metric, coop["lmo"].dataset) == ("bop:bop19_average_recall", "lmo")
    assert coop["mean"].compute == "mean" and len(coop["mean"].of) == 7
    storm2 = {c.key: c for c in papers["storm-t2"].columns}
    assert storm2["ycbv"].metric == "segm:AP"
    seq = {c.key: c for c in papers["seqpose-t1"].columns}
    assert (seq["r_iou50"].metric, seq["r_iou50"].dataset) == ("nocs:IoU50", "real275")
    assert (seq["c_5deg5cm"].metric, seq["c_5deg5cm"].dataset) == ("nocs:5deg5cm", "camera25")
    gs2 = papers["gspose-t2"]
    assert [s.metric for s in gs2.sections] == ["bop:recall_ad", "bop:recall_proj"]
    assert {c.key: c.obj for c in gs2.columns}["cat"] == 6


def test_printed_text_of_numbers_is_kept():
    t = {t.id: t for p in load_papers() for t in p.tables}
    row = t["storm-t2"].sections[0].rows[1]
    assert [c.text for c in row.cells][-1] == "0.990"
    tom = t["storm-t4"].sections[0].rows[0].cells[-1]
    assert (tom.text, tom.value, tom.spread) == ("98±5", 98.0, 5.0)


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"seed papers not found at {SEEDS}")
def test_published_numbers_appear_in_the_papers():
    """Every published number is in the paper's text, or its row carries a note explaining why not."""
    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", re.sub(r"\]\(#[^)]*\)", "]", s).lower())

    for p in load_papers():
        text = next(SEEDS.glob(f"{p.source.split('_')[0]}_*.txt")).read_text(encoding="utf-8")
        found = {round(float(x), 4) for x in re.findall(r"(?<![\d.])\d+(?:\.\d+)?(?!\d)", text)}
        for t in p.tables:
            assert norm(t.caption) in norm(text) or any("caption" in n for n in t.notes), t.id
            for s in t.sections:
                for r in s.rows:
                    missing = [c.text for c in r.cells if c.value is not None and round(c.value, 4) not in found]
                    assert not missing or r.note, f"{t.id} {r.cells[0].text}: {missing}"


def _paper(rows: str, columns: str = '[{key: m, label: M, kind: text}, {key: a, label: A, metric: "bop:recall_ad"}]'):
    return f"""
paper: {{key: x, title: X, short: X, source: x.txt, method: x}}
tables:
  - id: x-t1
    number: 1
    caption: A caption.
    setting: somewhere
    unit: percent
    columns: {columns}
    sections:
      - rows: {rows}
"""


def test_validator_names_the_place():
    assert parse_paper(_paper('[[row, 1.5], [other, 2]]')).tables[0].n_rows == 2
    with pytest.raises(DataFormatError, match=r"p\.yaml: field 'tables\[0\]\.sections\[0\]\.rows\[0\]'.*2 columns"):
        parse_paper(_paper("[[row, 1.5, 2.5]]"), "p.yaml")
    with pytest.raises(DataFormatError, match="must be a number"):
        parse_paper(_paper("[[row, abc]]"))
    with pytest.raises(DataFormatError, match="has no number"):
        parse_paper(_paper('[[row, "-"]]'))
    with pytest.raises(DataFormatError, match="unknown source"):
        parse_paper(_paper("[[row, 1]]", '[{key: m, label: M, kind: text}, {key: a, label: A, metric: "foo:x"}]'))
    with pytest.raises(DataFormatError, match="unknown dataset"):
        parse_paper(_paper("[[row, 1]]", "[{key: m, label: M, kind: text}, {key: a, label: A, dataset: nowhere}]"))
    with pytest.raises(DataFormatError, match="missing key"):
        parse_paper(_paper("[[row, 1]]").replace("    caption: A caption.\n", ""))


def test_units_and_dataset_kinds(tmp_path):
    assert convert(0.819, "fraction", "percent") == pytest.approx(81.9)
    assert convert(0.0123, "s", "ms") == pytest.approx(12.3)
    assert canonical_dataset("LM-O") == "lmo" and canonical_dataset("YCB-Video") == "ycbv"
    assert canonical_dataset("synth_default") is None
    (tmp_path / "real275").mkdir()
    (tmp_path / "real275" / "synth_nocs.json").write_text("{}")
    assert dataset_kind({"name": "real275", "root": str(tmp_path / "real275")})[0] == "synthetic"
    assert dataset_kind({"name": "real275", "root": "/nonexistent/real275"})[0] == "real"
    assert dataset_kind({"name": "synth_default"})[0] == "synthetic"
    assert dataset_kind({"name": "mystery"})[0] == "unknown"


def test_nested_metric_keys_and_train_source():
    from repro.report.collect import Run
    from repro.report.metrics import lookup, measure, native_unit

    assert check_metric("tom:variants.cosine.accuracy") is None and check_metric("train:loss") is None
    assert "between its dots" in check_metric("tom:variants..accuracy")
    scores = {"variants": {"cosine": {"accuracy": 0.875, "seconds_per_frame": 0.0124}}, "a.b": 1.0}
    assert lookup(scores, "variants.cosine.accuracy") == 0.875 and lookup(scores, "a.b") == 1.0
    assert lookup(scores, "variants.nope.accuracy") is None and lookup(scores, "variants.cosine.accuracy.x") is None
    run = Run(method="storm", dataset="synth_default", dataset_kind="synthetic", weights="from-scratch",
              preset="cpu", uses_ground_truth=False, task="instance", split="test", path=Path("r"),
              scores={"tom": scores, "train": {"loss": 0.86}})
    assert measure(run, "tom:variants.cosine.accuracy").value == 0.875
    assert measure(run, "train:loss").value == 0.86 and native_unit("train:loss") == "none"
    assert native_unit("tom:variants.cosine.seconds_per_frame") == "s"
    assert native_unit("tom:variants.time_limited.accuracy") == "fraction"


_VARIANT_PAPER = """
paper: {key: x, title: X, short: X, source: x.txt, method: storm}
tables:
  - id: x-t1
    number: 1
    caption: A caption.
    setting: somewhere
    unit: percent
    dataset: lmo
    ours:
      - {method: storm, label: "plain (ours)"}
      - {method: storm, label: "cosine (ours)", metrics: {acc: "tom:variants.cosine.accuracy"}}
      - {method: storm_small, label: "small variant (ours)"}
    columns:
      - {key: m, label: M, kind: text}
      - {key: acc, label: Accuracy, metric: "tom:accuracy"}
      - {key: loss, label: Loss, unit: none, metric: "train:loss"}
    sections:
      - rows: [[published row, 90.0, 1.5]]
"""


def _variant_runs(dataset: str, kind: str) -> list:
    from repro.report.collect import Run

    def run(method: str, acc: float, cos: float, loss: float) -> Run:
        return Run(method=method, dataset=dataset, dataset_kind=kind, weights="from-scratch", preset="cpu",
                   uses_ground_truth=False, task="instance", split="test", path=Path(method) / dataset,
                   scores={"tom": {"accuracy": acc, "variants": {"cosine": {"accuracy": cos}}},
                           "train": {"loss": loss}})

    return [run("storm", 0.95, 0.85, 0.9), run("storm_small", 0.9, 0.8, 1.9)]


def test_ours_rows_with_per_column_metrics_and_variants():
    from repro.report.tables import other_data_table, paper_table

    paper = parse_paper(_VARIANT_PAPER)
    spec = paper.tables[0]
    assert dict(spec.ours[1].metrics) == {"acc": "tom:variants.cosine.accuracy"}
    main = paper_table(paper, spec, _variant_runs("lmo", "real"))
    ours = {r.cells[0].text: [c.text for c in r.cells[1:]] for r in main.rows("ours")}
    assert ours["plain (ours)"][:2] == ["95.0", "0.9"]
    assert ours["cosine (ours)"][:2] == ["85.0", "0.9"]
    assert ours["small variant (ours)"][:2] == ["90.0", "1.9"]
    assert "weights: from-scratch" in ours["small variant (ours)"][2]
    other = other_data_table(paper, spec, _variant_runs("synth_default", "synthetic"))
    assert other is not None and other.columns == ("Method", "Dataset", "Accuracy (%)", "training loss", "Source")
    rows = {r.cells[0].text: [c.text for c in r.cells[1:]] for r in other.rows()}
    assert rows["plain (ours)"][1:3] == ["95.0", "0.9"] and rows["cosine (ours)"][1:3] == ["85.0", "0.9"]
    assert rows["small variant (ours)"][1:3] == ["90.0", "1.9"]
    for cells in rows.values():
        assert cells[0] == "synth_default (synthetic)" and "weights: from-scratch · preset: cpu" in cells[-1]


def test_ours_metrics_must_name_number_columns():
    bad = _VARIANT_PAPER.replace('metrics: {acc: "tom:variants.cosine.accuracy"}', 'metrics: {m: "tom:accuracy"}')
    with pytest.raises(DataFormatError, match=r"ours\[1\]\.metrics.*'m' is not a number column"):
        parse_paper(bad)
    bad = _VARIANT_PAPER.replace('"tom:variants.cosine.accuracy"', '"tom:variants..accuracy"')
    with pytest.raises(DataFormatError, match="between its dots"):
        parse_paper(bad)


def test_storm_tables_name_the_ablation_variants():
    t = {t.id: t for p in load_papers() for t in p.tables}
    assert [(o.method, o.label) for o in t["storm-t1"].ours] == [
        ("storm", "STORM (ours; on video data it tracks, verified by TOM)"),
        ("storm_perframe", "STORM, every frame segmented and registered (ours)"),
        ("storm_cosseg", "Cosine-matching segmentation + registrar (CNOS-like baseline, no SAM)"),
        ("registrar_gtmask", "Ground-truth mask + registrar (upper bound)")]
    cols = {c.key: c for c in t["storm-t1"].columns}
    assert cols["ar"].label == "Mean AR (BOP)" and cols["ar_storm"].metric == "bop:ar_storm"
    assert all(r.cells[-1].text == "-" for s in t["storm-t1"].sections for r in s.rows)
    assert {c.key: c.metric for c in t["storm-t3"].columns}["iou"] == "bop:mean_mask_iou"
    assert [o.method for o in t["storm-t2"].ours] == ["storm", "storm_perframe", "oracle"]
    assert [o.method for o in t["storm-t3"].ours] == ["storm_unaligned", "storm", "storm_cad"]
    assert [o.method for o in t["storm-t4"].ours] == ["storm", "storm_notom", "registrar_*"]
    t5 = t["storm-t5"].ours
    assert [o.method for o in t5] == ["storm"] * 4
    assert [dict(o.metrics)["acc"] for o in t5] == [f"tom:variants.{v}.accuracy" for v in
                                                    ("cosine", "no_attention", "attention1", "attention2")]
    assert [o.method for o in t["storm-t6"].ours] == ["storm_nolang", "storm"]
    assert [o.method for o in t["storm-t7"].ours] == ["storm_hsfa0", "storm", "storm_hsfa7"]
    assert {c.key: c.metric for c in t["storm-t7"].columns}["loss"] == "train:loss"


def test_video_split_runs_fill_per_image_tables_and_tracking_tables():
    from dataclasses import replace

    from repro.report.tables import _task_ok

    spec = parse_paper(_VARIANT_PAPER).tables[0]
    image_run = _variant_runs("synth_default", "synthetic")[0]
    video_run = replace(image_run, split="video")
    tracker = replace(image_run, task="tracking")
    tracking_spec = replace(spec, task="tracking")
    assert _task_ok(spec, image_run) and _task_ok(spec, video_run) and not _task_ok(spec, tracker)
    assert _task_ok(tracking_spec, video_run) and _task_ok(tracking_spec, tracker)
    assert not _task_ok(tracking_spec, image_run)
