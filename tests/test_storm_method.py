"""STORM as a PoseMethod: config, the conformance kit, tracking / verification / re-registration logic,
per-stage timings and the training-time scores its checkpoint carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from methods.storm.config import StormConfig
from methods.storm.method import TIMING_KEYS, NotTrainedError, StormMethod, projected_box
from repro.data.bop import BopDataset
from repro.testing import check_pose_method
from repro.types import ObjectModel

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks train much faster single-threaded on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from repro.data.synth.bop_synth import generate_bop_dataset

    root = tmp_path_factory.mktemp("storm") / "synth_smoke"
    generate_bop_dataset(root, "smoke", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    method = StormMethod({"preset": "smoke"}, seed=0)
    method.fit(BopDataset(smoke_root, split="train_pbr"))
    out = tmp_path_factory.mktemp("storm_ckpt")
    method.save(out)
    return out


def _trained(checkpoint: Path, **cfg: object) -> StormMethod:
    """The smoke checkpoint with the CAD model (fast onboarding; the fused model is tested in test_storm_model3d
    and by the smoke pipeline)."""
    m = StormMethod({"preset": "smoke", "model3d": {"backend": "cad"}, **cfg}, seed=0)
    m.load(checkpoint)
    return m


def test_config_presets_and_overrides():
    cpu = StormConfig.from_mapping({"preset": "cpu", "som": {"hsfa_layers": 0}, "verify": "none"})
    assert cpu.som.hsfa_layers == 0 and cpu.verify == "none"
    assert cpu.som.backbone == StormConfig.from_mapping({"preset": "cpu"}).som.backbone != "dinov2_vits14_reg"
    assert cpu.model3d.backend == "fused" and cpu.model3d.align
    paper = StormConfig.from_mapping({})
    assert (paper.som.backbone, paper.som.text_encoder, paper.som.hsfa_layers) == ("dinov2_vits14_reg",
                                                                                   "clip_vit_b32", 3)
    assert paper.model3d.backend == "sam3d" and paper.tom.variant == "attention" and paper.tom.layers == 1
    with pytest.raises(ValueError, match="unknown config key"):
        StormConfig.from_mapping({"presett": "cpu"})
    with pytest.raises(ValueError, match=r"storm\.som"):
        StormConfig.from_mapping({"preset": "cpu", "som": {"no_such_field": 1}})
    with pytest.raises(ValueError, match="verify"):
        StormConfig.from_mapping({"verify": "sometimes"})


def test_paper_preset_needs_local_weights(smoke_root: Path):
    method = StormMethod({}, seed=0)
    with pytest.raises(Exception, match="weights"):
        method.fit(BopDataset(smoke_root, split="train_pbr"))


def test_untrained_method_says_so(tmp_path: Path):
    method = StormMethod({"preset": "smoke"}, seed=0)
    with pytest.raises(NotTrainedError, match="fit"):
        method.onboard({})
    with pytest.raises(FileNotFoundError, match=r"storm_config\.json"):
        method.load(tmp_path)


def test_checkpoint_carries_training_scores(checkpoint: Path):
    m = _trained(checkpoint)
    tom = m.train_summary["scores_tom.json"]
    assert set(tom["variants"]) == {"cosine", "no_attention", "attention1", "attention2"}
    for v in tom["variants"].values():
        assert 0.0 <= v["accuracy"] <= 1.0 and v["seconds_per_frame"] > 0
    assert tom["accuracy"] == tom["variants"]["attention1"]["accuracy"]
    train = m.train_summary["scores_train.json"]
    assert np.isfinite(train["loss"]) and train["steps"] > 0


def test_storm_passes_the_conformance_kit(checkpoint: Path, smoke_root: Path):
    report = check_pose_method(lambda seed: _trained(checkpoint), BopDataset(smoke_root, split="test"), n_frames=2)
    assert report.n_estimates > 0


def _run_video(method: StormMethod, root: Path) -> list:
    video = BopDataset(root, split="video", targets="video_drop_targets_bop19.json")
    method.onboard(video.objects())
    method.reset(None)
    out = []
    for frame, targets in video.iter_frames(with_gt=False):
        if targets.instances:
            out.append((frame, method.predict(frame, targets)))
    return out


def test_tracking_verification_and_reregistration(checkpoint: Path, smoke_root: Path):
    dropped = set()
    video = BopDataset(smoke_root, split="video", targets="video_drop_targets_bop19.json")
    import json

    for sid in video.scene_ids():
        seq = json.loads((video.split_dir / f"{sid:06d}" / "scene_sequence.json").read_text())
        dropped |= {(sid, i) for i in seq["drop_protocol"]["dropped_im_ids"]}

    # without failure detection: register once, then only track
    with _trained(checkpoint, verify="none") as m:
        runs = _run_video(m, smoke_root)
    assert runs and all(set(p.timings) == set(TIMING_KEYS) for _, p in runs)
    assert not {f.key for f, _ in runs} & dropped  # the drop protocol's frames are never seen
    assert runs[0][1].timings["segmentation"] > 0 and runs[0][1].timings["tracking"] == 0
    assert all(p.timings["segmentation"] == 0 and p.timings["tracking"] > 0 and p.timings["verification"] == 0
               for _, p in runs[1:] if p.estimates)

    # TOM flags every tracked pose as lost -> SOM + registration again on every frame
    with _trained(checkpoint) as m:
        m.tom.verify = lambda crop, memory: 0.0
        runs = _run_video(m, smoke_root)
        assert all(p.timings["segmentation"] > 0 and p.timings["registration"] > 0 for _, p in runs)
        assert all(p.timings["tracking"] > 0 and p.timings["verification"] > 0 for _, p in runs[1:])
        assert all(len(t.memory) >= 1 for t in m._tracks.values())

    # TOM accepts every tracked pose -> segmentation only on the first frame
    with _trained(checkpoint) as m:
        m.tom.verify = lambda crop, memory: 1.0
        runs = _run_video(m, smoke_root)
        assert all(p.timings["segmentation"] == 0 for _, p in runs[1:] if p.estimates)


def test_no_tracking_outside_videos(checkpoint: Path, smoke_root: Path):
    test = BopDataset(smoke_root, split="test")
    with _trained(checkpoint) as m:
        m.onboard(test.objects())
        m.reset(None)
        for frame, targets in test.iter_frames(with_gt=False):
            p = m.predict(frame, targets)
            assert p.timings["tracking"] == 0 and p.timings["verification"] > 0
            assert all(e.mask is not None and e.mask.shape == frame.rgb.shape[:2] for e in p.estimates)


def test_projected_box_is_the_vertex_extent():
    model = ObjectModel(obj_id=1, vertices=np.array([[-10.0, -20.0, 0.0], [10.0, 20.0, 0.0]]),
                        faces=np.zeros((0, 3), int), diameter=44.7)
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    x, y, w, h = projected_box(model, K, np.eye(3), np.array([0.0, 0.0, 100.0]))
    assert (x, y, w, h) == pytest.approx((40.0, 20.0, 20.0, 40.0))
