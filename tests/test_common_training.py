"""Training utilities: schedules, clipping, the loop, exact resume, safe checkpoints, seeded loading, MLflow."""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from methods.common.checkpoint import CheckpointError, read_safetensors
from methods.common.training import (
    STORM_SOM_PAPER,
    STORM_TOM_PAPER,
    Callback,
    CheckpointNotFoundError,
    MlflowLogger,
    SeededSampler,
    TrainConfig,
    Trainer,
    ValidationCallback,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    decode_state,
    derive_seed,
    encode_state,
    isolated_rng,
    list_checkpoints,
    load_training_checkpoint,
    lr_at,
    make_dataloader,
    prepare_epoch,
)

# --------------------------------------------------------------------------- toy problem


class ToyDataset(Dataset):
    """Linearly separable 2-class points; ``__getitem__`` adds jitter from the global numpy / torch / random RNGs
    so that data-loading randomness is part of what determinism and resume must reproduce."""

    def __init__(self, n: int = 48, dim: int = 4, seed: int = 0, jitter: float = 0.01):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, generator=g)
        self.y = (self.x @ w > 0).float()
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = float(np.random.standard_normal()) + random.random() + float(torch.randn(()))  # noqa: NPY002
        return self.x[i] + self.jitter * noise, self.y[i]


def toy_model(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))


def bce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    logits = model(x).squeeze(1)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
    acc = ((logits > 0).float() == y).float().mean()
    return {"loss": loss, "acc": acc}


def toy_loader(kind: str = "seeded", num_workers: int = 0, batch_size: int = 8, seed: int = 0) -> DataLoader:
    ds = ToyDataset()
    if kind == "seeded":
        return make_dataloader(ds, batch_size, seed, num_workers=num_workers)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen, num_workers=num_workers)


def small_cfg(**kw: Any) -> TrainConfig:
    base = dict(
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        max_steps=23,
        warmup_steps=4,
        schedule="cosine",
        min_lr=0.01,
        grad_clip_norm=1.0,
        log_every=2,
        checkpoint_every=5,
        batch_size=8,
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


class CrashAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, logs: Any) -> None:
        if step == self.step:
            raise KeyboardInterrupt("simulated crash")


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, logs: Any) -> None:
        if step == self.step:
            trainer.request_stop()


# --------------------------------------------------------------------------- config & schedule


def test_storm_paper_schedule_values() -> None:
    cfg = STORM_SOM_PAPER
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.grad_clip_norm) == ("sgd", 0.01, 0.0, 0.1)
    assert (cfg.warmup_steps, cfg.max_steps, cfg.schedule) == (5000, 80000, "cosine")
    expected = {0: 0.0, 2500: 0.005, 5000: 0.01, 42500: 0.005, 80000: 0.0}
    for step, lr in expected.items():
        assert lr_at(step, cfg) == pytest.approx(lr, abs=1e-12), step
    # the paper's formula at arbitrary steps
    for t in (1, 777, 4999, 5001, 20000, 61234, 79999):
        ref = 0.01 * t / 5000 if t < 5000 else 0.5 * 0.01 * (1 + math.cos((t - 5000) * math.pi / 75000))
        assert lr_at(t, cfg) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert STORM_TOM_PAPER.optimizer == "adam" and STORM_TOM_PAPER.lr == 1e-4 and STORM_TOM_PAPER.batch_size == 64


def test_schedule_shapes() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, max_steps=110, warmup_steps=10, schedule="cosine")
    assert [lr_at(s, cfg) for s in range(0, 11, 2)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    lin = cfg.replace(schedule="linear")
    assert lr_at(60, lin) == pytest.approx(0.55) and lr_at(110, lin) == pytest.approx(0.1)
    const = cfg.replace(schedule="constant")
    assert lr_at(5, const) == pytest.approx(0.5) and lr_at(100, const) == 1.0


def test_lambda_scheduler_follows_lr_at() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=0.5, min_lr=0.05, max_steps=12, warmup_steps=3)
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, cfg.total_steps())
    for step in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(step, cfg), abs=1e-15)
        opt.step()
        sched.step()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig()
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(max_steps=10, epochs=2)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(max_steps=10, optimizer="lbfgs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(max_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"max_steps": 3, "learning_rate": 0.1})
    cfg = TrainConfig.from_dict({"max_steps": 3, "betas": [0.8, 0.9]})
    assert cfg.betas == (0.8, 0.9)
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_build_optimizer(name: str) -> None:
    cfg = TrainConfig(optimizer=name, lr=0.1, weight_decay=0.01, momentum=0.5, max_steps=1)  # type: ignore[arg-type]
    opt = build_optimizer(nn.Linear(2, 2).parameters(), cfg)
    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    assert type(opt) is expected
    assert opt.param_groups[0]["weight_decay"] == 0.01


# --------------------------------------------------------------------------- clipping


def test_clip_gradients_caps_norm() -> None:
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))
    a.grad = torch.tensor([30.0, 40.0, 0.0])
    b.grad = torch.full((2, 2), 10.0)
    before = clip_gradients([a, b], max_norm=0.1)
    assert float(before) == pytest.approx(math.sqrt(2500 + 400))
    after = torch.linalg.vector_norm(torch.cat([a.grad.flatten(), b.grad.flatten()]))
    assert float(after) <= 0.1 + 1e-6
    a.grad = torch.tensor([0.01, 0.0, 0.0])
    b.grad = torch.zeros(2, 2)
    clip_gradients([a, b], max_norm=0.1)
    assert torch.equal(a.grad, torch.tensor([0.01, 0.0, 0.0]))


def test_trainer_step_is_clipped() -> None:
    """With SGD lr 1 and no momentum, one update equals the clipped gradient: its norm is at most the cap."""
    model = toy_model(dropout=0.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    def big_loss(m: nn.Module, batch: Any) -> torch.Tensor:
        return 1000.0 * bce_loss(m, batch)["loss"]

    cfg = TrainConfig(optimizer="sgd", lr=1.0, schedule="constant", max_steps=1, grad_clip_norm=0.1, log_every=1)
    result = Trainer(model, big_loss, toy_loader(), cfg, progress=False).fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float(torch.linalg.vector_norm(after - before)) == pytest.approx(0.1, rel=1e-4)
    assert result.history[0]["train/grad_norm"] > 0.1


# --------------------------------------------------------------------------- training


def test_loss_decreases_on_toy_task() -> None:
    cfg = TrainConfig(optimizer="adam", lr=0.05, max_steps=60, warmup_steps=5, log_every=5, seed=1)
    trainer = Trainer(toy_model(), bce_loss, toy_loader(), cfg, progress=False)
    result = trainer.fit()
    losses = [row["train/loss"] for row in result.history]
    assert result.completed and result.step == 60
    assert losses[0] > 0.5 and result.final_loss is not None and result.final_loss < 0.2
    assert result.history[-1]["train/acc"] > 0.9
    assert [row["step"] for row in result.history] == [float(s) for s in range(5, 61, 5)]


def test_vit_tiny_scratch_trains() -> None:
    from methods.common.backbones import create_backbone

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = create_backbone(
                "vit_tiny_scratch", seed=0, img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2
            )
            self.fc = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.backbone(x).patch_tokens.mean(1)).squeeze(1)

    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 3, 16, 16, generator=g)
    labels = (torch.arange(32) % 2).float()
    images[labels == 1, 0] += 0.5  # class 1 is redder
    data = list(zip(images, labels, strict=True))

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(m(x), y)

    cfg = TrainConfig(optimizer="adamw", lr=5e-3, max_steps=24, warmup_steps=3, log_every=6, grad_clip_norm=1.0)
    result = Trainer(Head(), loss, make_dataloader(data, 8, 0), cfg, progress=False).fit()
    losses = [row["train/loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 0.5


def test_epochs_mode_and_callbacks() -> None:
    seen: list[tuple[str, int]] = []

    class Recorder(Callback):
        def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
            seen.append(("epoch", epoch))

        def on_train_end(self, trainer: Trainer) -> None:
            seen.append(("end", trainer.step))

    cfg = TrainConfig(optimizer="sgd", lr=0.1, epochs=3, batch_size=16, log_every=100)
    loader = toy_loader(batch_size=16)  # 48 samples -> 3 batches per epoch
    result = Trainer(toy_model(), bce_loss, loader, cfg, callbacks=[Recorder()], progress=False).fit()
    assert (result.step, result.epoch, result.total_steps) == (9, 3, 9)
    assert seen == [("epoch", 0), ("epoch", 1), ("epoch", 2), ("end", 9)]
    assert result.history and result.history[-1]["step"] == 9.0  # the last partial window is flushed


def test_validation_callback_does_not_change_training() -> None:
    x_val = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))

    def validate(model: nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(5)  # consuming the global RNG here must not affect training
        return {"mean_logit": float(model(x_val).mean())}

    cfg = small_cfg(checkpoint_every=0)
    plain = toy_model()
    Trainer(plain, bce_loss, toy_loader(), cfg, progress=False).fit()
    with_val = toy_model()
    val = ValidationCallback(validate, every_n_steps=5)
    trainer = Trainer(with_val, bce_loss, toy_loader(), cfg, callbacks=[val], progress=False)
    result = trainer.fit()
    assert [s for s, _ in val.history] == [5, 10, 15, 20, 23]
    assert any("val/mean_logit" in row for row in result.history)
    assert with_val.training
    assert_bit_identical(params_of(plain), params_of(with_val))


def test_fit_leaves_global_rng_alone_and_is_deterministic() -> None:
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    expect_t, expect_np = torch.rand(3), np.random.rand(3)  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    runs = []
    for _ in range(2):
        model = toy_model()
        Trainer(model, bce_loss, toy_loader(), small_cfg(checkpoint_every=0), progress=False).fit()
        runs.append(params_of(model))
    assert torch.equal(torch.rand(3), expect_t) and np.array_equal(np.random.rand(3), expect_np)  # noqa: NPY002
    assert_bit_identical(runs[0], runs[1])
    other = toy_model()
    Trainer(other, bce_loss, toy_loader(), small_cfg(checkpoint_every=0, seed=8), progress=False).fit()
    assert not torch.equal(params_of(other)["0.weight"], runs[0]["0.weight"])


def test_non_finite_loss_is_an_error() -> None:
    def nan_loss(m: nn.Module, batch: Any) -> torch.Tensor:
        return bce_loss(m, batch)["loss"] * float("nan")

    with pytest.raises(FloatingPointError, match="step 0"):
        Trainer(toy_model(), nan_loss, toy_loader(), small_cfg(), progress=False).fit()


def test_amp_request_on_cpu_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = small_cfg(amp="bf16", max_steps=2, warmup_steps=1)
        trainer = Trainer(toy_model(), bce_loss, toy_loader(), cfg, progress=False)
    assert trainer.amp_dtype is None and trainer.scaler is None
    assert "float32" in caplog.text
    assert trainer.fit().completed


# --------------------------------------------------------------------------- seeded loading


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_deterministic(num_workers: int) -> None:
    """Same seed -> same batches, including the dataset's own random jitter (seeded per worker, or in the
    main process by ``isolated_rng`` as the trainer does when there are no workers)."""

    def epoch_batches(seed: int) -> list[torch.Tensor]:
        loader = make_dataloader(ToyDataset(jitter=1.0), 8, seed, num_workers=num_workers)
        out = []
        with isolated_rng(seed=seed):
            for epoch in range(2):
                prepare_epoch(loader, seed, epoch)
                out.extend(x for x, _ in loader)
        return out

    a, b, c = epoch_batches(0), epoch_batches(0), epoch_batches(1)
    assert len(a) == 12
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[6])  # epochs are shuffled differently


def test_seeded_sampler_epochs_and_start() -> None:
    s = SeededSampler(10, seed=3)
    first = list(s)
    assert sorted(first) == list(range(10))
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(second) == list(range(10))
    s.set_start(4)
    assert list(s) == second[4:] and len(s) == 6
    s.set_epoch(1)
    assert list(s) == second
    assert list(SeededSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


# --------------------------------------------------------------------------- checkpoints & resume


@pytest.mark.parametrize(
    ("kind", "num_workers", "optimizer"),
    [("seeded", 0, "sgd"), ("seeded", 2, "adamw"), ("plain", 0, "adam")],
)
def test_resume_is_bit_identical(tmp_path: Path, kind: str, num_workers: int, optimizer: str) -> None:
    cfg = small_cfg(optimizer=optimizer, lr=0.2 if optimizer == "sgd" else 0.02)
    reference = toy_model()
    Trainer(reference, bce_loss, toy_loader(kind, num_workers), cfg, progress=False).fit()

    ckpt_dir = tmp_path / "ckpt"
    crashed = Trainer(
        toy_model(), bce_loss, toy_loader(kind, num_workers), cfg, checkpoint_dir=ckpt_dir, callbacks=[CrashAt(13)]
    )
    crashed.progress = False
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert [p.name for p in list_checkpoints(ckpt_dir)] == ["step_00000005", "step_00000010"]
    ck = load_training_checkpoint(ckpt_dir)
    assert (ck.step, ck.epoch, ck.batch_in_epoch) == (10, 1, 4)  # mid-epoch: 6 batches per epoch

    resumed_model = toy_model(seed=99)  # a different init: everything must come from the checkpoint
    resumed = Trainer(resumed_model, bce_loss, toy_loader(kind, num_workers), cfg, checkpoint_dir=ckpt_dir)
    resumed.progress = False
    result = resumed.fit(resume=True)
    assert result.step == 23 and result.completed
    assert_bit_identical(params_of(reference), params_of(resumed_model))
    assert [row["step"] for row in result.history][:2] == [12.0, 14.0]


def test_graceful_stop_then_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = small_cfg(checkpoint_every=0)
    reference = toy_model()
    Trainer(reference, bce_loss, toy_loader(), cfg, progress=False).fit()
    first_model = toy_model()
    first = Trainer(first_model, bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, callbacks=[StopAt(7)])
    first.progress = False
    stopped = first.fit()
    assert stopped.step == 7 and not stopped.completed and stopped.checkpoint == tmp_path / "step_00000007"
    first.callbacks = []
    assert first.fit().completed  # continuing in memory is exact as well
    assert_bit_identical(params_of(reference), params_of(first_model))
    model = toy_model(seed=5)
    again = Trainer(model, bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="methods.common.training"):
        assert again.fit(resume=tmp_path / "step_00000007").completed  # an older checkpoint, named explicitly
    assert "resuming at step 7" in caplog.text and "differs" not in caplog.text
    assert_bit_identical(params_of(reference), params_of(model))
    # resuming a finished run is a no-op
    done = Trainer(toy_model(seed=5), bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, progress=False)
    assert done.fit(resume=True).step == 23


def test_checkpoint_files_are_pickle_free(tmp_path: Path) -> None:
    cfg = small_cfg(optimizer="adam", lr=0.01, max_steps=6, checkpoint_every=3, keep_checkpoints=1)
    Trainer(toy_model(), bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, progress=False).fit()
    (folder,) = list_checkpoints(tmp_path)
    assert folder.name == "step_00000006"
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    meta = json.loads((folder / "state.json").read_text())
    assert meta["step"] == 6 and meta["config"]["optimizer"] == "adam"
    tensors = read_safetensors(folder / "tensors.safetensors")
    assert "model/0.weight" in tensors and any(k.startswith("rng.") for k in tensors)
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK"  # neither a pickle nor a torch zip archive
    ck = load_training_checkpoint(folder)
    assert ck.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(ck.optimizer["state"]) == {0, 1, 2, 3}  # int keys survive JSON
    assert isinstance(ck.rng["python"], tuple) and ck.rng["numpy"]["state"]["key"].dtype == np.uint32


def test_corrupted_or_missing_checkpoint_errors(tmp_path: Path) -> None:
    cfg = small_cfg(max_steps=3, warmup_steps=1, checkpoint_every=0)
    Trainer(toy_model(), bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path / "ok", progress=False).fit()
    folder = tmp_path / "ok" / "step_00000003"
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_training_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFoundError, match="no training checkpoint"):
        load_training_checkpoint(tmp_path)
    trainer = Trainer(toy_model(), bce_loss, toy_loader(), cfg, progress=False)
    with pytest.raises(CheckpointNotFoundError):
        trainer.fit(resume=tmp_path / "missing")

    data = bytearray((folder / "tensors.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (folder / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_training_checkpoint(folder)
    (folder / "state.json").write_text((folder / "state.json").read_text()[:100])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_training_checkpoint(folder)
    (folder / "tensors.safetensors").unlink()
    (folder / "state.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a pose-repro"):
        load_training_checkpoint(folder)


def test_resume_into_wrong_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = small_cfg(max_steps=2, warmup_steps=1)
    Trainer(toy_model(), bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, progress=False).fit()
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        Trainer(other, bce_loss, toy_loader(), cfg, checkpoint_dir=tmp_path, progress=False).fit(resume=True)


def test_state_encoding_round_trip() -> None:
    state = {
        "state": {0: {"step": torch.tensor(3.0), "buf": torch.arange(4)}, 1: {}},
        "groups": [{"betas": (0.9, 0.99), "lr": 0.1 + 0.2, "flag": None, "__tuple__": "literal key"}],
        "arr": np.arange(3, dtype=np.uint32),
        "nan": float("inf"),
    }
    tree, tensors = encode_state(state, "x")
    tree = json.loads(json.dumps(tree))
    back = decode_state(tree, tensors)
    assert back["state"][0]["step"] is tensors["x.0"]
    assert back["groups"][0]["betas"] == (0.9, 0.99) and back["groups"][0]["lr"] == 0.1 + 0.2
    assert back["groups"][0]["__tuple__"] == "literal key"
    assert back["arr"].dtype == np.uint32 and back["nan"] == float("inf")
    with pytest.raises(TypeError, match="without pickle"):
        encode_state({"f": object()}, "x")


# --------------------------------------------------------------------------- MLflow


@pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.store.tracking.sqlalchemy_store")
def test_mlflow_logger_writes_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # anything MLflow would write relative to the working folder stays in tmp
    cfg = small_cfg(max_steps=8, log_every=2, checkpoint_every=4)
    with MlflowLogger(uri, experiment="unit", run_name="toy", artifact_location=str(tmp_path / "art")) as tracker:
        val = ValidationCallback(lambda m: {"score": 1.0}, every_n_steps=4, at_end=False)
        trainer = Trainer(
            toy_model(), bce_loss, toy_loader(), cfg, tracker=tracker, callbacks=[val], checkpoint_dir=tmp_path / "c"
        )
        trainer.progress = False
        trainer.fit()
        run_id = tracker.run_id
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.optimizer"] == "sgd" and run.data.params["train.max_steps"] == "8"
    loss = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in sorted(loss, key=lambda m: m.step)] == [2, 4, 6, 8]
    lrs = {m.step: m.value for m in client.get_metric_history(run_id, "train/lr")}
    assert lrs[2] == pytest.approx(lr_at(1, cfg))
    assert [m.step for m in client.get_metric_history(run_id, "val/score")] == [4, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "mlflow.db"]
