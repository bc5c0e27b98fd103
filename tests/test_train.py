"""The training loop on a tiny model and tiny images: learning, resuming, freezing, schedules."""

import math

import pytest
import torch

from gclf.device import select_device
from gclf.errors import UserError
from gclf.params import AugmentParams
from gclf.train.augment import batch_augmenter, train_transform
from gclf.train.loop import FitConfig, fit
from gclf.train.losses import make_loss
from gclf.train.model import build_model
from gclf.train.optim import adam_plateau, adamw_schedule, freeze_backbone, layer_decay_groups
from gclf.train.pipeline import InputPipeline, progressive_sizes
from gclf.tta import predict_probs

SIZE = 32
NO_AUGMENT = AugmentParams(crop_scale=1.0, hflip=0.0, rotation=0.0, color_jitter=0.0, grayscale=0.0, erasing=0.0)


def toy_data(n, seed):
    """Class 1 images are bright, class 0 dark: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.4).float()
    base = torch.randint(0, 120, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    images = base + (labels.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return images, labels


def phase2_run(epochs, state_path=None, ema_decay=0.0, epoch_sizes=(), model=None, backend="per-image", on_epoch=None):
    """``model``, when given, is the live model the run trains in place (built as here). The per-image
    backend runs without augmentation; the batched one with the default augmentation."""
    torch.manual_seed(0)
    train, val = toy_data(96, 1), toy_data(48, 2)
    model = model or build_model("test_efficientnet", "linear", 0.0)
    optimizer, scheduler = adamw_schedule(model, 3e-3, 0.01, 0.8, "onecycle", 0.2, total_steps=4 * 3)
    cfg = FitConfig(
        epochs=epochs,
        batch_size=32,
        monitor="val_auc",
        seed=0,
        grad_clip=1.0,
        ema_decay=ema_decay,
        epoch_sizes=epoch_sizes,
    )
    return fit(
        model,
        train,
        val,
        make_loss("bce", train[1]),
        optimizer,
        scheduler,
        cfg,
        InputPipeline(transforms=(train_transform(NO_AUGMENT, SIZE),) * 2)
        if backend == "per-image"
        else InputPipeline(batch_augment=batch_augmenter(AugmentParams(), SIZE, train[1])),
        select_device("cpu", 1),
        state_path=state_path,
        state_key="k",
        on_epoch=on_epoch,
    )


def test_phase2_learns_the_toy_task():
    result = phase2_run(epochs=4)
    assert len(result.history) == 4 and 1 <= result.best_epoch <= 4
    assert max(r["val_auc"] for r in result.history) > 0.9
    assert result.train_images_per_s > 0


def test_progressive_sizes_grow_to_the_final_size():
    assert progressive_sizes(96, 128, 12) == (96, 96, 96, 112, 112, 112, 112, 112, 112, 128, 128, 128)
    assert progressive_sizes(64, 128, 5) == (64, 80, 96, 112, 128)
    assert progressive_sizes(0, 128, 5) == () and progressive_sizes(100, 128, 1) == (128,)


def test_progressive_resizing_trains_at_each_epochs_size(monkeypatch):
    """The network sees the epoch's size during training (and still learns); validation stays at full size."""
    seen = []
    forward = torch.nn.Module.__call__

    def record(module, x, *args, **kwargs):
        if module.training and isinstance(x, torch.Tensor) and x.ndim == 4 and type(module).__name__ == "Classifier":
            seen.append(x.shape[-1])
        return forward(module, x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", record)
    result = phase2_run(epochs=4, epoch_sizes=(16, 16, 24, 32))
    assert sorted(set(seen)) == [16, 24, 32] and seen[0] == 16 and seen[-1] == 32
    assert max(r["val_auc"] for r in result.history) > 0.9


@pytest.mark.parametrize("backend", ["per-image", "batched"])
def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch, backend):
    full = phase2_run(epochs=4, backend=backend)
    state = tmp_path / "state.pt"
    import gclf.train.loop as loop_module
    import gclf.train.state as state_module

    # "kill" the run after its second epoch: the loop stops, the state file stays behind
    real_save = state_module.atomic_write
    calls = []

    def save_then_die(path, write):
        real_save(path, write)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(state_module, "atomic_write", save_then_die)
    try:
        phase2_run(epochs=4, state_path=state, backend=backend)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(state_module, "atomic_write", real_save)
    assert state.exists()
    trained_epochs = []
    train_epoch = loop_module._train_epoch

    def record_epoch(*args, epoch, **kwargs):
        trained_epochs.append(epoch)
        return train_epoch(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(loop_module, "_train_epoch", record_epoch)
    logged = []
    resumed = phase2_run(epochs=4, state_path=state, backend=backend, on_epoch=lambda *epoch: logged.append(epoch))
    assert trained_epochs == [2, 3]  # epochs 1 and 2 came from the state, not from training again
    assert [row for row, _ in logged] == full.history  # the saved epochs logged again (DVCLive), then the new ones
    assert all(images_per_s > 0 for _, images_per_s in logged)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == full.history
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert not state.exists()  # removed on success


def test_ema_model_is_what_gets_evaluated_and_returned():
    torch.manual_seed(0)
    live = build_model("test_efficientnet", "linear", 0.0)
    result = phase2_run(epochs=1, ema_decay=0.9, model=live)
    assert "n_averaged" not in result.model.state_dict()
    # returned: the average, not the live weights the run trained in place
    assert not torch.allclose(result.model.state_dict()["head.1.weight"], live.state_dict()["head.1.weight"].cpu())
    # evaluated: the epoch's validation loss is the returned model's
    val_images, val_labels = toy_data(48, 2)
    probs = torch.from_numpy(predict_probs(result.model, val_images)).double().clamp(1e-7, 1 - 1e-7)
    loss = torch.nn.functional.binary_cross_entropy(probs, val_labels.double()).item()
    assert abs(loss - result.history[0]["val_loss"]) < 1e-6


def test_phase1_freezes_backbone_weights_and_batchnorm_stats():
    train, val = toy_data(64, 1), toy_data(32, 2)
    model = build_model("test_efficientnet", "mlp", 0.1)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {name: p.detach().clone() for name, p in model.head.named_parameters()}
    optimizer, scheduler = adam_plateau(freeze_backbone(model), 1e-2, 0.0, 0.5, 1, "val_loss")
    cfg = FitConfig(epochs=2, batch_size=32, monitor="val_loss", seed=0, freeze_backbone=True)
    result = fit(
        model,
        train,
        val,
        make_loss("weighted_bce", train[1]),
        optimizer,
        scheduler,
        cfg,
        InputPipeline(transforms=(train_transform(NO_AUGMENT, SIZE),) * 2),
        select_device("cpu", 1),
    )
    for key, value in result.model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed in phase 1"
    # the head was trained: its weights moved from their own initial values (parameters only: the
    # BatchNorm statistics of the head move with any forward pass in train mode, trained or not)
    trained = dict(result.model.head.named_parameters())
    assert trained.keys() == head_before.keys()
    assert all(not torch.equal(trained[name].detach(), head_before[name]) for name in ("0.weight", "4.weight"))


def test_layer_decay_gives_lower_stages_smaller_learning_rates():
    model = build_model("test_efficientnet", "linear", 0.0)
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    head_group = next(g for g in groups if any(p is model.head[1].weight for p in g["params"]))
    stem_group = next(g for g in groups if any(p is model.backbone.conv_stem.weight for p in g["params"]))
    assert head_group["lr"] == 1.0 and stem_group["lr"] < head_group["lr"] / 8
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim == 1 for p in g["params"]))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_plateau_schedule_cuts_the_rate_when_the_monitor_stalls():
    model = build_model("test_efficientnet", "linear", 0.0)
    optimizer, scheduler = adamw_schedule(model, 1e-3, 0.0, 1.0, "plateau", 0.2, 10, (0.5, 0, "val_auc"))
    scheduler.step(0.8)
    scheduler.step(0.7)  # worse, patience 0: cut
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4] * len(optimizer.param_groups)


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from test_train import phase2_run
from gclf.train.phases import save_phase

result = phase2_run(epochs=2, ema_decay=0.9)
rank = os.environ["RANK"]
torch.save(result.model.state_dict(), f"rank{{rank}}.pt")
os.makedirs(f"rank{{rank}}")
os.chdir(f"rank{{rank}}")
save_phase("ddp", result, {{"arch": "test_efficientnet"}}, "val_auc")
"""


def test_torchrun_ddp_on_cpu_trains_one_model_and_rank_0_writes(tmp_path):
    """Two gloo processes, as `torchrun --nproc_per_node=2 stages/train_phase2.py` starts them."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "ddp.py").write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "ddp.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # one model: gradients averaged by DDP, BatchNorm statistics by the loop
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert (tmp_path / "rank0/models/ddp.pt").exists() and (tmp_path / "rank0/metrics/ddp.json").exists()
    assert not (tmp_path / "rank1/models").exists()


DDP_RESUME_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
import gclf.train.loop
from test_train import phase2_run

rank = os.environ["RANK"]
state = f"rank{{rank}}/state.pt"  # each rank's own disk: only rank 0 writes a state
os.makedirs(f"rank{{rank}}", exist_ok=True)
if sys.argv[1] == "first":  # two epochs, then stop with the state left behind, as a kill would
    gclf.train.loop.os.unlink = lambda path: None
    phase2_run(epochs=2, state_path=state, backend="batched")
else:
    trained = []
    train_epoch = gclf.train.loop._train_epoch
    def record(*args, epoch, **kwargs):
        trained.append(epoch)
        return train_epoch(*args, epoch=epoch, **kwargs)
    gclf.train.loop._train_epoch = record
    result = phase2_run(epochs=4, state_path=state, backend="batched")
    torch.save({{"trained": trained, "weights": result.model.state_dict()}}, f"rank{{rank}}.pt")
"""


def test_torchrun_ranks_all_resume_from_rank_0s_state(tmp_path):
    """On several machines only rank 0's disk holds the state: every rank must resume from it, or the
    ranks train different epochs and hang in their collectives."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "resume.py").write_text(DDP_RESUME_SCRIPT.format(tests=str(Path(__file__).parent)))
    for step in ("first", "resume"):
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "resume.py", step],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        if step == "first":
            assert (tmp_path / "rank0/state.pt").exists() and not (tmp_path / "rank1/state.pt").exists()
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["trained"] == rank1["trained"] == [2, 3]
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])


@pytest.mark.parametrize("warmup_fraction", [0.0, 0.2, 0.99])
def test_onecycle_runs_for_any_number_of_steps(warmup_fraction):
    """A tiny dataset gives a handful of steps; OneCycleLR divides by each phase's length in steps."""
    for steps in range(1, 12):
        model = build_model("test_efficientnet", "linear", 0.0)
        optimizer, scheduler = adamw_schedule(model, 1e-3, 0.0, 1.0, "onecycle", warmup_fraction, steps)
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
        assert all(math.isfinite(g["lr"]) for g in optimizer.param_groups)


def test_device_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device"):
        select_device("cuda", 1)
    assert select_device("auto", 1).type == "cpu"
