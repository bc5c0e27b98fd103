"""What several ``gclf`` subcommands share: argparse types, the options that mean the same in each
(``--model``, ``--threads``, ``--tta``, ``--threshold``, the JSON ``--out``, face detection,
``--no-align``), and the :class:`~gclf.deploy.predict.Predictor` those options describe."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any, Callable

from gclf.params import HEADS, ModelParams

if TYPE_CHECKING:  # imported where used: it loads torch, ONNX Runtime and OpenVINO
    from gclf.deploy.predict import Predictor

ARTIFACT_HELP = "a .pt checkpoint, .onnx or OpenVINO .xml"


def bounded(kind: type, low: float, high: float, expected: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within [low, high], else a message saying what was ``expected``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = bounded(int, 1, math.inf, "a whole number of at least 1")
non_negative_int = bounded(int, 0, math.inf, "a whole number of at least 0")
probability = bounded(float, 0.0, 1.0, "a number between 0 and 1")
non_negative = bounded(float, 0.0, math.inf, "a number of at least 0")
positive = bounded(float, 1e-9, math.inf, "a number above 0")
port = bounded(int, 1, 65535, "a port number (1-65535)")


def shard(text: str) -> tuple[int, int]:
    """An argparse type: ``K/N`` with 1 <= K <= N, as (K, N)."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N, shard K of N with 1 <= K <= N (as 1/4), got {text!r}")
    return int(k), int(n)


def add_model(
    parser: argparse.ArgumentParser, help: str = ARTIFACT_HELP, metavar: str = "ARTIFACT", required: bool = True
) -> None:
    """``--model``: the artifact to load (explain takes only a checkpoint; bench-serve can do without)."""
    parser.add_argument("--model", required=required, metavar=metavar, help=help)


def add_threads(parser: argparse.ArgumentParser, what: str = "inference threads", metavar: str | None = "N") -> None:
    """``--threads``, 2 by default: the runtimes' CPU threads."""
    parser.add_argument("--threads", type=positive_int, default=2, metavar=metavar, help=f"{what} (default 2)")


def add_tta(parser: argparse.ArgumentParser, help: str = "average over the artifact's TTA views") -> None:
    parser.add_argument("--tta", action="store_true", help=help)


def add_threshold(
    parser: argparse.ArgumentParser,
    help: str = "decision threshold (default: the artifact's, else 0.5)",
    kind: Callable[[str], float] = probability,
) -> None:
    """``--threshold``; None when not given, for the artifact's own. predict's ``kind`` is float: the
    Predictor rejects a value out of range with its own message."""
    parser.add_argument("--threshold", type=kind, metavar="T", help=help)


def add_json_out(
    parser: argparse.ArgumentParser, help: str = "also write the numbers as JSON", metavar: str = "FILE.json"
) -> None:
    """``--out``: the report printed, also as a JSON file (evaluate and the benchmarks)."""
    parser.add_argument("--out", metavar=metavar, help=help)


def add_architecture(parser: argparse.ArgumentParser, arch_help: str) -> None:
    """``--arch`` and ``--head`` of a model with random weights (bench, bench-serve), the params' defaults."""
    parser.add_argument("--arch", default=ModelParams().arch, help=arch_help)
    parser.add_argument("--head", default=ModelParams().head, choices=HEADS)


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--detect-faces`` and its options (predict, evaluate, explain, serve)."""
    from gclf.faces.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE

    parser.add_argument(
        "--detect-faces",
        action="store_true",
        help="inputs are photos: find every face, crop it like the training crops, label each (docs/faces.md)",
    )
    parser.add_argument(
        "--min-face-size",
        type=positive_int,
        default=DEFAULT_MIN_FACE_SIZE,
        metavar="PX",
        help=f"with --detect-faces: ignore faces with a smaller crop, in photo px (default {DEFAULT_MIN_FACE_SIZE})",
    )
    parser.add_argument(
        "--max-faces",
        type=positive_int,
        default=DEFAULT_MAX_FACES,
        metavar="N",
        help=f"with --detect-faces: keep the N best-scoring faces per photo (default {DEFAULT_MAX_FACES})",
    )


def add_align_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-align`` (predict and evaluate): ``args.align`` False, else None (aligned where installed)."""
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_const",
        const=False,
        help="label faces as cropped, not aligned by dlib's landmarks (default: aligned where the landmark "
        "model is installed; docs/predict.md#alignment)",
    )


def load_predictor(args: argparse.Namespace, batch_size: int = 32) -> Predictor:
    """The :class:`~gclf.deploy.predict.Predictor` of ``--model``, ``--threads``, ``--tta``, ``--threshold``,
    ``--no-align`` and the face detection options (predict and evaluate); says on stderr when the
    artifact carries no threshold to use."""
    from gclf.deploy.predict import Predictor

    predictor = Predictor(
        args.model,
        args.threads,
        args.tta,
        args.threshold,
        batch_size,
        detect_faces=args.detect_faces,
        min_face_size=args.min_face_size,
        max_faces=args.max_faces,
        align=args.align,
    )
    if predictor.threshold_source == "default":
        print(
            f"note: {args.model} carries no threshold; using {predictor.threshold} (see --threshold)", file=sys.stderr
        )
    return predictor
