"""``repro report`` end to end on real inputs: smoke datasets, the oracle's results and their scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from repro.cli import cli
from repro.errors import DataFormatError
from repro.report import build_report, load_papers

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARTIFACTS = Path(os.environ.get("REPRO_TEST_ARTIFACTS", ROOT / "artifacts" / "test_report"))


def _repro(*args: str) -> None:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, f"repro {' '.join(args)}: {res.output}"


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    """results/oracle/{synth_smoke,nocs_smoke} made by the real tools on the smoke presets (once per session)."""
    root = tmp_path_factory.mktemp("report_inputs")
    bop, nocs, res = root / "ds", root / "nocs", root / "results" / "oracle"
    _repro("data", "synth", "--preset", "smoke", "--out", str(bop))
    _repro("data", "synth", "--kind", "nocs", "--preset", "smoke", "--out", str(nocs))
    _repro("infer", "--method", "oracle", "--dataset-dir", str(bop), "--out", str(res / "synth_smoke"),
           "--preset", "noisy")
    _repro("eval", "bop", "--dataset-dir", str(bop), "--results", str(res / "synth_smoke" / "estimates.csv"),
           "--out", str(res / "synth_smoke" / "scores_bop.json"), "--errors", "vsd,mssd,mspd,ad,add,adi,proj")
    _repro("eval", "coco", "--dataset-dir", str(bop), "--results", str(res / "synth_smoke" / "segmentation.json"),
           "--out", str(res / "synth_smoke" / "scores_coco_segm.json"))
    _repro("infer", "--method", "oracle", "--dataset-dir", str(nocs), "--out", str(res / "nocs_smoke"),
           "--preset", "noisy")
    _repro("eval", "nocs", "--results", str(res / "nocs_smoke" / "category.json"), "--dataset-dir", str(nocs),
           "--out", str(res / "nocs_smoke" / "scores_nocs.json"))
    return root / "results"


@pytest.fixture(scope="session")
def report(smoke_results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "reports"
    return build_report(smoke_results, out)


def _copy_run(src: Path, dst: Path, **changes) -> None:
    shutil.copytree(src, dst)
    info = json.loads((dst / "run.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            info[section][field] = value
        else:
            info[key] = value
    (dst / "run.json").write_text(json.dumps(info))


@pytest.fixture(scope="session")
def extended(smoke_results, tmp_path_factory):
    """The smoke results plus: STORM on synthetic data with from-scratch weights, Co-op on (what run.json
    says is) LM-O, a bare BOP CSV with scores, one without, a profile.json and pytest-benchmark output."""
    base = tmp_path_factory.mktemp("extended")
    results = base / "results"
    shutil.copytree(smoke_results, results)
    src = results / "oracle" / "synth_smoke"
    _copy_run(src, results / "storm" / "synth_smoke", method="storm", capabilities__uses_ground_truth=False,
              provenance__weights="from-scratch", provenance__preset="cpu")
    _copy_run(src, results / "coop" / "lmo", method="coop", capabilities__uses_ground_truth=False,
              provenance__weights="pretrained", provenance__preset="paper",
              dataset={"name": "lmo", "root": str(base / "missing" / "lmo"), "split": "test"})
    (results / "storm" / "synth_smoke" / "scores_tom.json").write_text(json.dumps({
        "accuracy": 0.97, "seconds_per_frame": 0.0135,
        "variants": {v: {"accuracy": a, "seconds_per_frame": t} for v, a, t in (
            ("cosine", 0.8755, 0.0124), ("no_attention", 0.9523, 0.0122), ("attention1", 0.9836, 0.0135),
            ("attention2", 0.9784, 0.0168))}}))
    (results / "storm" / "synth_smoke" / "scores_train.json").write_text(json.dumps({"loss": 0.86}))
    _copy_run(results / "storm" / "synth_smoke", results / "storm_hsfa0" / "synth_smoke", method="storm_hsfa0",
              method_class="storm")
    (results / "storm_hsfa0" / "synth_smoke" / "scores_train.json").write_text(json.dumps({"loss": 1.96}))
    shutil.copy(src / "estimates.csv", results / "mymethod_lmo-test.csv")
    shutil.copy(src / "scores_bop.json", results / "mymethod_lmo-test.scores_bop.json")
    shutil.copy(src / "estimates.csv", results / "lonely_ycbv-test.csv")
    (results / "storm" / "synth_smoke" / "profile.json").write_text(json.dumps({
        "stages": {"detection": {"median": 0.010, "p90": 0.012, "max": 0.02},
                   "total": {"median": 0.030, "p90": 0.034, "max": 0.05}},
        "fps": 33.3, "peak_memory_mb": 512.0, "device": "cpu", "threads": 2}))
    bench = base / ".benchmarks" / "Linux-CPython-3.11-64bit"
    bench.mkdir(parents=True)
    (bench / "0001_x.json").write_text(json.dumps({
        "datetime": "2026-01-01T00:00:00", "machine_info": {"node": "ci"}, "commit_info": {"id": "abc123"},
        "benchmarks": [{"name": "test_vsd", "fullname": "benchmarks/bench_metrics_bop.py::test_vsd", "group": "bop",
                        "stats": {"min": 0.001, "max": 0.003, "mean": 0.002, "stddev": 0.0005, "median": 0.002,
                                  "rounds": 10, "ops": 500.0}}]}))
    return build_report(results, base / "reports"), results


class _Tables(HTMLParser):
    """Rows of every <table> by id: (tr classes, [cell texts]); and every <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.imgs: list[dict[str, str]] = []
        self._table: str | None = None
        self._row: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_thead = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "thead":
            self._in_thead = True
        elif tag == "tr" and self._table is not None:
            self._row = (a.get("class") or "", [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append({k: v or "" for k, v in attrs})

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._in_thead:
                self.headers[self._table] = self._row[1]
            else:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_thead = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


def _leaderboard(html: str) -> list[dict[str, str]]:
    p = _parse(html)
    heads = p.headers["t-leaderboard"]
    return [dict(zip(heads, cells, strict=True)) for _, cells in p.tables["t-leaderboard"]]


def _md_section(md: str, title: str) -> str:
    start = md.index(f"#### {title}\n")
    end = md.find("\n#### ", start + 1)
    return md[start:end if end > 0 else len(md)]


def test_report_files(report):
    out = report.out_dir
    assert report.html == out / "index.html" and report.markdown == out / "index.md"
    assert report.n_runs == 2 and report.n_evaluated == 2 and not report.problems
    for t in report.tables:
        assert (out / t.csv).is_file(), t.csv
    assert json.loads((out / "index.json").read_text())["n_runs"] == 2
    assert not list(out.rglob(".*.tmp"))


def test_every_paper_table_with_its_published_rows(report):
    html = _parse(report.html.read_text())
    md = report.markdown.read_text()
    papers = load_papers()
    assert sum(len(p.tables) for p in papers) == 24
    for p in papers:
        for spec in p.tables:
            rows = html.tables[f"t-{spec.id}"]
            published = [cells for cls, cells in rows if cls.split()[0] == "published"]
            assert len(published) == spec.n_rows, spec.id
            first = spec.sections[0].rows[0]
            assert published[0][:len(first.cells)] == [c.text for c in first.cells] or \
                published[0][0].rstrip("†") == first.cells[0].text, spec.id
            section = _md_section(md, f"{p.short} — Table {spec.number}")
            assert section.count(f"published: {p.short}, Table {spec.number} |") == spec.n_rows, spec.id
            assert spec.caption[:60] in section
            assert f"no results of {spec.method} yet" in section
            assert report.table(spec.id).n_published == spec.n_rows


def test_leaderboard_numbers_equal_the_scores(report, smoke_results):
    board = {r["Dataset"]: r for r in _leaderboard(report.html.read_text())}
    bop = json.loads((smoke_results / "oracle" / "synth_smoke" / "scores_bop.json").read_text())
    segm = json.loads((smoke_results / "oracle" / "synth_smoke" / "scores_coco_segm.json").read_text())
    nocs = json.loads((smoke_results / "oracle" / "nocs_smoke" / "scores_nocs.json").read_text())
    row = next(r for d, r in board.items() if d.startswith("ds"))
    assert row["Method"] == "oracle" and row["Data"] == "synthetic" and row["Weights"] == "none"
    assert row["AR (%)"] == f"{100 * bop['bop19_average_recall']:.1f}"
    for key, col in (("vsd", "AR_VSD (%)"), ("mssd", "AR_MSSD (%)"), ("mspd", "AR_MSPD (%)")):
        assert row[col] == f"{100 * bop[f'bop19_average_recall_{key}']:.1f}"
    assert row["ADD(S)@0.1d (%)"] == f"{100 * bop['recall_ad']:.1f}"
    assert row["ADD-S AUC (%)"] == f"{100 * bop['auc_adi']:.1f}"
    assert row["mAP (segm) (%)"] == f"{100 * segm['AP']:.1f}"
    assert row["Time / image (ms)"] == f"{1000 * bop['bop19_average_time_per_image']:.1f}"
    assert "synthetic data" in row["Labels"] and "ground-truth baseline" in row["Labels"]
    cat = next(r for d, r in board.items() if "real275" in d)
    assert "(synthetic)" in cat["Dataset"], "the synthetic NOCS set must not pass for the real REAL275"
    for key in ("IoU25", "IoU50", "IoU75", "5deg5cm", "10deg10cm"):
        col = key.replace("deg", "°") + " (%)"
        assert cat[col] == f"{nocs[key]:.1f}"
    md = report.markdown.read_text()
    assert f"| oracle | {row['Dataset']} | synthetic | none | noisy | {row['AR (%)']} |" in md


def test_figures_png_and_svg(report):
    names = {f.name for f in report.figures}
    for prefix in ("recall-thresholds-", "per-object-recall-", "nocs-ap-oracle-", "runtime-stages",
                   "accuracy-vs-time"):
        assert any(n.startswith(prefix) for n in names), prefix
    for f in report.figures:
        png, svg = report.out_dir / f.png, report.out_dir / f.svg
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in svg.read_text()[:2000]
    imgs = {i["src"] for i in _parse(report.html.read_text()).imgs}
    assert imgs == {f.png for f in report.figures}
    assert all(f"![{f.title}]({f.png})" in report.markdown.read_text() for f in report.figures)


def test_runtime_profile_from_timings(report):
    rows = _parse(report.html.read_text()).tables["t-runtime"]
    totals = [cells for _, cells in rows if cells[2] == "total"]
    assert len(totals) == 2 and all("warm-up" in cells[-2] for cells in totals)
    assert all("synthetic data" in cells[-1] and "ground-truth baseline" in cells[-1] for _, cells in rows)


def test_our_rows_in_paper_tables(extended):
    index, results = extended
    html = report_html = index.html.read_text()
    tables = _parse(report_html).tables
    storm_other = tables["t-storm-t1-other"]
    label = "STORM (ours; on video data it tracks, verified by TOM)"
    assert {cells[0] for _, cells in storm_other} == {label}
    storm_row = next((cls, cells) for cls, cells in storm_other if cells[0] == label)
    assert "synthetic-data" in storm_row[0] and "from-scratch-weights" in storm_row[0]
    assert "synthetic data" in storm_row[1][-1] and "from-scratch weights" in storm_row[1][-1]
    bop = json.loads((results / "oracle" / "synth_smoke" / "scores_bop.json").read_text())
    assert storm_row[1][2:5] == [f"{bop['recall_add']:.2f}", f"{bop['recall_adi']:.2f}",
                                 f"{bop['bop19_average_recall']:.2f}"]
    coop = [cells for cls, cells in tables["t-coop-t1"] if cls.startswith("ours")]
    assert len(coop) == 1
    assert coop[0][3] == f"{100 * bop['bop19_average_recall']:.1f}" and coop[0][4:12] == ["-"] * 8
    assert "no results of gspose yet" in html and "no results of storm yet" not in html
    assert index.table("storm-t4").status.startswith("the results of storm have none")
    for _, cells in tables["t-storm-t6"]:
        if cells[0] == "SOM with language (ours)":
            assert "synthetic data" in cells[-1] and "from-scratch weights" in cells[-1]
    md = index.markdown.read_text()
    assert "| STORM (ours; on video data it tracks, verified by TOM) | ds (synthetic) |" in md
    assert md.count("synthetic data · from-scratch weights") >= 4


def test_variants_and_training_scores_in_the_ablation_tables(extended):
    index, _ = extended
    tables = _parse(index.html.read_text()).tables
    t5 = {cells[0]: cells for cls, cells in tables["t-storm-t5"] if cls.startswith("ours")}
    assert [t5[k][1:3] for k in ("Cosine similarity (ours)", "TOM w/o attention (ours)",
                                 "TOM (attention, 1 layer) (ours)", "TOM (attention, 2 layers) (ours)")] == [
        ["87.55", "12.4"], ["95.23", "12.2"], ["98.36", "13.5"], ["97.84", "16.8"]]
    assert all("ds (synthetic)" in cells[-1] and "weights: from-scratch" in cells[-1] and "preset: cpu" in cells[-1]
               for cells in t5.values())
    t7 = {cells[0]: cells for cls, cells in tables["t-storm-t7"] if cls.startswith("ours")}
    assert t7["0 layer HSFA (ours)"][1] == "1.96" and t7["3 layer HSFA (ours)"][1] == "0.86"
    assert "7 layer HSFA (ours)" not in t7  # no run of that variant
    board = _leaderboard(index.html.read_text())
    assert {"storm", "storm_hsfa0"} <= {r["Method"] for r in board}


def test_bare_csv_with_scores_and_without(extended):
    index, results = extended
    board = _leaderboard(index.html.read_text())
    mine = [r for r in board if r["Method"] == "mymethod"]
    bop = json.loads((results / "mymethod_lmo-test.scores_bop.json").read_text())
    assert len(mine) == 1 and mine[0]["Dataset"] == "LM-O"
    assert mine[0]["AR (%)"] == f"{100 * bop['bop19_average_recall']:.1f}"
    assert "bare results file" in mine[0]["Labels"] and "weights unknown" in mine[0]["Labels"]
    lonely = [p for p in index.problems if "lonely_ycbv-test.csv" in p]
    assert len(lonely) == 1 and "without scores" in lonely[0] and "repro eval bop" in lonely[0]
    assert "lonely_ycbv-test.csv" in index.html.read_text() and not [r for r in board if r["Method"] == "lonely"]


def test_profile_json_and_benchmarks(extended):
    index, _ = extended
    tables = _parse(index.html.read_text()).tables
    storm = [cells for _, cells in tables["t-runtime"] if cells[0] == "storm"]
    total = next(c for c in storm if c[2] == "total")
    assert total[3] == "30.00" and total[6] == "33.3" and total[7] == "512" and total[8] == "cpu"
    bench = tables["t-benchmarks"]
    assert len(bench) == 1 and bench[0][1][0].endswith("test_vsd") and bench[0][1][2] == "2.000"


def test_malformed_scores_name_the_file(smoke_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(smoke_results / "oracle" / "synth_smoke", results / "oracle" / "x")
    bad = results / "oracle" / "x" / "scores_bop.json"
    bad.write_text('{"bop19_average_recall": 0.5,')
    with pytest.raises(DataFormatError, match=r"scores_bop\.json.*invalid JSON"):
        build_report(results, tmp_path / "out")
    bad.write_text(json.dumps({"bop19_average_recall": "high"}))
    with pytest.raises(DataFormatError, match=r"scores_bop\.json: field 'bop19_average_recall': must be a number"):
        build_report(results, tmp_path / "out")
    bad.write_text("[]")
    res = CliRunner().invoke(cli, ["report", "--results-dir", str(results), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and str(bad) in res.stderr and "JSON object" in res.stderr
    assert not (tmp_path / "out" / "index.html").exists()


def test_cli_writes_the_report(smoke_results, tmp_path):
    res = CliRunner().invoke(cli, ["report", "--results-dir", str(smoke_results), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_runs"] == 2 and Path(summary["html"]).is_file() and Path(summary["markdown"]).is_file()
    res = CliRunner().invoke(cli, ["report", "--results-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "results directory not found" in res.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (/usr/bin/chromium); CI installs it")
def test_html_renders_in_headless_chromium(extended, tmp_path):
    index, _ = extended
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    url = index.html.resolve().as_uri()
    shot = tmp_path / "index.png"
    run = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1400,2400",
                          f"--screenshot={shot}", url], capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report_index.png")
    shutil.copy(shot, index.out_dir / "screenshot.png")
    dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _parse(dom.stdout)
    for p in load_papers():
        for spec in p.tables:
            assert f"t-{spec.id}" in parsed.tables, spec.id
    assert {"t-leaderboard", "t-runtime", "t-benchmarks", "t-provenance"} <= set(parsed.tables)
    assert len(parsed.imgs) == len(index.figures)
    assert all(i.get("data-loaded") == "yes" for i in parsed.imgs), parsed.imgs
