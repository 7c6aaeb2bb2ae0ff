"""PoseMethod interface, registry and the conformance kit (which must catch broken methods)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from repro.interface import Capabilities, NotTrainableError, PoseMethod, objects_hash
from repro.registry import BUILTIN_METHODS, UnknownMethodError, available_methods, create_method, get_method_class
from repro.testing import ConformanceError, check_pose_method
from repro.types import PoseEstimate, Prediction

ROOT = Path(__file__).resolve().parent.parent


def test_importing_registry_does_not_import_torch_or_methods():
    code = ("import sys, repro.registry, repro.interface, repro.testing, repro.cli; "
            "repro.registry.available_methods(); "
            "print('torch' in sys.modules, 'methods.baselines.oracle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_builtin_map_agrees_with_entry_points():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["repro.methods"]
    assert eps == dict(BUILTIN_METHODS)
    for name in BUILTIN_METHODS:
        assert (ROOT / "conf" / "method" / f"{name}.yaml").is_file(), f"conf/method/{name}.yaml missing"


def test_registry_lookup_and_errors():
    assert "oracle" in available_methods()
    assert get_method_class("oracle").name == "oracle"
    with pytest.raises(UnknownMethodError, match=r"unknown method 'nope'; registered: .*oracle"):
        create_method("nope")


def test_capabilities_validation():
    with pytest.raises(ValueError, match="unknown"):
        Capabilities(inputs=frozenset({"lidar"}))
    with pytest.raises(ValueError, match="at least one task"):
        Capabilities(tasks=())
    caps = Capabilities(tasks=("tracking", "instance"), inputs=frozenset({"rgb", "depth"}))
    assert caps.task == "tracking" and caps.is_video


def test_default_training_calls_refuse_clearly():
    m = create_method("oracle")
    with pytest.raises(NotTrainableError, match="oracle"):
        m.fit(None)
    with pytest.raises(NotTrainableError):
        m.save("/tmp/x")


def test_objects_hash_is_order_independent(goldtoy_dataset):
    objs = list(goldtoy_dataset.objects().values())
    assert objects_hash(objs) == objects_hash(objs[::-1])
    assert objects_hash(objs) != objects_hash(objs[:-1])


# --------------------------------------------------------------------------- conformance kit


class _Good(PoseMethod):
    """Predicts a fixed pose in front of the camera for every target (deterministic)."""

    name = "good"
    capabilities = Capabilities(inputs=frozenset({"rgb"}), timing_keys=("detect",))

    def predict(self, frame, targets):
        rng = np.random.default_rng([self.seed, frame.scene_id, frame.im_id])
        ests = [PoseEstimate(t.obj_id, np.eye(3), [0, 0, 600 + rng.normal()], 0.5) for t in targets.instances]
        return Prediction(ests, timings={"detect": 0.001})


def _kit(cls, dataset, **kw):
    return check_pose_method(lambda seed: cls(seed=seed), dataset, **kw)


def test_kit_accepts_a_good_method(goldtoy_dataset):
    report = _kit(_Good, goldtoy_dataset)
    assert report.n_frames == 3 and report.n_estimates > 0
    assert {"determinism", "stateless", "units", "timings"} <= set(report.checks)


def _variant(name, **overrides):
    return type(name, (_Good,), overrides)


def _pred(fn):
    def predict(self, frame, targets):
        return fn(self, frame, targets, _Good.predict(self, frame, targets))
    return predict


BROKEN = {
    "rotation": _pred(lambda s, f, t, p: Prediction([PoseEstimate(e.obj_id, e.R * 1.01, e.t) for e in p.estimates],
                                                      timings=p.timings)),
    "units": _pred(lambda s, f, t, p: Prediction([PoseEstimate(e.obj_id, e.R, e.t / 1000) for e in p.estimates],
                                                   timings=p.timings)),
    "timings": _pred(lambda s, f, t, p: Prediction(p.estimates, timings={"other": 0.1})),
    "targets": _pred(lambda s, f, t, p: Prediction([PoseEstimate(99, e.R, e.t) for e in p.estimates],
                                                     timings=p.timings)),
    "score": _pred(lambda s, f, t, p: Prediction([PoseEstimate(e.obj_id, e.R, e.t, np.nan) for e in p.estimates],
                                                   timings=p.timings)),
    "types": _pred(lambda s, f, t, p: {"estimates": p.estimates}),
    "mask": _pred(lambda s, f, t, p: Prediction([PoseEstimate(e.obj_id, e.R, e.t, mask=np.zeros((4, 4)))
                                                 for e in p.estimates], timings=p.timings)),
}


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_kit_rejects_broken_outputs(goldtoy_dataset, check):
    cls = _variant(f"Broken_{check}", predict=BROKEN[check])
    with pytest.raises(ConformanceError, match=rf"\[{check}\]"):
        _kit(cls, goldtoy_dataset)


def test_kit_detects_nondeterminism(goldtoy_dataset):
    counter = iter(range(10**6))
    cls = _variant("Random", predict=_pred(lambda s, f, t, p: Prediction(
        [PoseEstimate(e.obj_id, e.R, e.t + next(counter)) for e in p.estimates], timings=p.timings)))
    with pytest.raises(ConformanceError, match=r"\[determinism\]"):
        _kit(cls, goldtoy_dataset)


def test_kit_detects_hidden_state_and_checks_reset(goldtoy_dataset):
    def stateful(self, frame, targets):
        self.calls = getattr(self, "calls", 0) + 1
        p = _Good.predict(self, frame, targets)
        return Prediction([PoseEstimate(e.obj_id, e.R, e.t + np.array([self.calls, 0, 0])) for e in p.estimates],
                          timings=p.timings)

    with pytest.raises(ConformanceError, match=r"\[stateless\]"):
        _kit(_variant("Stateful", predict=stateful), goldtoy_dataset)

    video_caps = Capabilities(tasks=("tracking",), inputs=frozenset({"rgb", "video"}), timing_keys=("detect",))
    no_reset = _variant("NoReset", predict=stateful, capabilities=video_caps)
    with pytest.raises(ConformanceError, match=r"\[reset\]"):
        _kit(no_reset, goldtoy_dataset)

    def reset(self, sequence_id=None):
        self.calls = 0

    report = _kit(_variant("Resets", predict=stateful, capabilities=video_caps, reset=reset), goldtoy_dataset)
    assert "reset" in report.checks


def test_kit_checks_save_load_round_trip(goldtoy_dataset, tmp_path):
    caps = Capabilities(trainable=True, timing_keys=("detect",))

    def predict(self, frame, targets):
        p = _Good.predict(self, frame, targets)
        return Prediction([PoseEstimate(e.obj_id, e.R, e.t + np.array([self.w, 0, 0])) for e in p.estimates],
                          timings=p.timings)

    def init(self, cfg=None, seed=0):
        PoseMethod.__init__(self, cfg, seed)
        self.w = float(seed) + 0.5

    def save(self, d):
        (Path(d) / "w.txt").write_text(repr(self.w))

    def load_ok(self, d):
        self.w = float((Path(d) / "w.txt").read_text())

    good = _variant("Trainable", capabilities=caps, predict=predict, __init__=init, save=save, load=load_ok)
    assert "save_load" in _kit(good, goldtoy_dataset, workdir=tmp_path).checks
    def load_wrong(self, d):
        self.w = -float((Path(d) / "w.txt").read_text())

    bad = _variant("BadLoad", capabilities=caps, predict=predict, __init__=init, save=save, load=load_wrong)
    with pytest.raises(ConformanceError, match=r"\[save_load\]"):
        _kit(bad, goldtoy_dataset, workdir=tmp_path)


def test_kit_closes_every_instance_it_makes(goldtoy_dataset):
    closed = []
    cls = _variant("Closing", close=lambda self: closed.append(self))
    _kit(cls, goldtoy_dataset)
    assert len(closed) == 2  # the method under test and the determinism twin


def test_methods_are_context_managers():
    m = create_method("oracle")
    with m as entered:
        assert entered is m
