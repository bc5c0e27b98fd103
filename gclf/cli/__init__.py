"""The ``gclf`` command: check params, label images, explain, evaluate, serve and benchmark models.

The argparse layer only: each subcommand parses its arguments, calls the library and prints the
result; a :class:`~gclf.errors.UserError` ends with one line on stderr and exit code 2, as in the
stages (:func:`gclf.stage.fail`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from typing import TYPE_CHECKING, Any, Callable

from gclf.errors import EXIT_SOME_INPUTS_FAILED, EXIT_USER_ERROR, UserError
from gclf.stage import fail

if TYPE_CHECKING:  # imported where used: it loads torch, ONNX Runtime and OpenVINO
    from gclf.deploy.predict import Predictor
    from gclf.deploy.rows import Tally


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


LABELLED_FORMATS = ("imagefolder", "presplit", "csv", "utkface")  # data.format's layouts, synthetic aside
positive_int = bounded(int, 1, math.inf, "a whole number of at least 1")
non_negative_int = bounded(int, 0, math.inf, "a whole number of at least 0")
probability = bounded(float, 0.0, 1.0, "a number between 0 and 1")
non_negative = bounded(float, 0.0, math.inf, "a number of at least 0")
positive = bounded(float, 1e-9, math.inf, "a number above 0")
port = bounded(int, 1, 65535, "a port number (1-65535)")
SERVE_EXTRA = {  # module: its package in pyproject.toml's serve extra
    "fastapi": "fastapi",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
    "aiohttp": "aiohttp",
}


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--detect-faces`` and its options (predict, evaluate, explain)."""
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


def shard(text: str) -> tuple[int, int]:
    """An argparse type: ``K/N`` with 1 <= K <= N, as (K, N)."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N, shard K of N with 1 <= K <= N (as 1/4), got {text!r}")
    return int(k), int(n)


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` subcommand's arguments (handled by :func:`predict_command`)."""
    predict = sub.add_parser(
        "predict",
        help="label face images with a trained model (.pt, .onnx or OpenVINO .xml)",
        description=(
            "Label face images with any model the pipeline writes. One row per input: path, probability "
            "of the positive class, label, aligned, error; with --detect-faces, one row per face found, with its "
            "number and box. Exit code 0: every input predicted; "
            f"{EXIT_SOME_INPUTS_FAILED}: some inputs failed (listed on stderr); {EXIT_USER_ERROR}: nothing "
            "could be read, or a bad argument or model."
        ),
    )
    predict.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, folders (recursive), globs, CSVs of paths"
    )
    predict.add_argument("--model", required=True, metavar="ARTIFACT", help="a .pt checkpoint, .onnx or OpenVINO .xml")
    predict.add_argument("--tta", action="store_true", help="average over the artifact's TTA views (flip by default)")
    predict.add_argument(
        "--threshold", type=float, metavar="T", help="decision threshold (default: the one stored in the artifact)"
    )
    predict.add_argument(
        "--out",
        metavar="FILE",
        help="write rows to a .csv, .jsonl or .json file, each batch as it ends (.json: at the end; default: stdout)",
    )
    predict.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out (.csv or .jsonl) from a run that was stopped, do only the other inputs",
    )
    predict.add_argument(
        "--shard",
        type=shard,
        metavar="K/N",
        help="predict only shard K of N (1 <= K <= N), split by a hash of each input's path: one per machine",
    )
    predict.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="images per model call (default 32)"
    )
    predict.add_argument("--threads", type=positive_int, default=2, metavar="N", help="inference threads (default 2)")
    add_detection_arguments(predict)
    add_align_argument(predict)
    predict.add_argument("--save-crops", metavar="DIR", help="with --detect-faces: save each face crop as a PNG here")


def predict_command(args: argparse.Namespace) -> None:
    """Run ``gclf predict``: rows to --out or stdout as they come, failures and images/s to stderr,
    exit code by outcome (of every row in --out, with --resume)."""
    import time
    from collections import Counter

    from tqdm import tqdm

    from gclf.deploy.inputs import Inputs, selected
    from gclf.deploy.output_file import check_and_record_settings, output_lock, run_settings
    from gclf.deploy.rows import Tally, output_format, resume_output, write_rows

    if args.save_crops and not args.detect_faces:
        raise UserError("--save-crops needs --detect-faces")
    if args.resume and not args.out:
        raise UserError("--resume needs --out FILE: the rows of the run to resume")
    if args.out:
        output_format(args.out, args.resume)  # a wrong name stops before the model loads, not after the run
    with output_lock(args.out):  # a second writer of --out stops here, before its model loads
        predictor = load_predictor(args, args.batch_size)
        if args.out:  # before resume_output cuts the file: a run of other settings must not touch it
            check_and_record_settings(args.out, run_settings(predictor, args.shard), args.resume)
        done, kept = resume_output(args.out, predictor.columns) if args.resume else (Counter(), Tally())
        inputs, new = Inputs(args.paths), Tally()

        def counted(chunks):
            for rows in chunks:
                for row in rows:
                    new.add(row)
                    if row["error"]:
                        tqdm.write(f"failed: {row['path']}: {row['error']}", file=sys.stderr)
                yield rows

        start = time.perf_counter()
        chunks = predictor.stream(inputs, progress=True, crops_dir=args.save_crops, keep=selected(args.shard, done))
        write_rows(counted(chunks), args.out, predictor.columns, append=args.resume)
    report_predictions(args, predictor, kept, new, time.perf_counter() - start, inputs.skipped)


def report_predictions(
    args: argparse.Namespace, predictor: Predictor, kept: Tally, new: Tally, seconds: float, skipped: int
) -> None:
    """The summary on stderr and the exit code of ``gclf predict``: ``new`` rows this run, ``kept``
    rows already in --out (--resume)."""
    rows, failed = kept.rows + new.rows, kept.failed + new.failed
    if not rows:
        print(f"note: shard {args.shard[0]}/{args.shard[1]} holds none of the inputs", file=sys.stderr)
        return
    if failed == rows:
        first = new.first_failure or kept.first_failure
        fail(
            f"nothing could be read: {first['path']}: {first['error']}"
            if rows == 1
            else f"nothing could be read: all {rows} inputs failed (listed above)"
        )
    done = new.rows - new.failed
    counted = f"{done} faces in {new.photos} photos" if args.detect_faces else f"{done} images"
    # with detection, a photo without a face was decoded and searched too
    searched = new.photos + new.no_face if args.detect_faces else done
    print(
        f"predicted {counted} in {seconds:.1f} s: {searched / seconds:.1f} images/s "
        f"({predictor.image_size} px, {args.threads} threads)"
        + (f"; skipped {skipped} files that are not images by their extension" if skipped else "")
        + (f"; kept the {kept.rows} rows already in {args.out}" if kept.rows else ""),
        file=sys.stderr,
    )
    if failed:
        print(f"{failed} of {rows} {'rows' if args.detect_faces else 'inputs'} failed", file=sys.stderr)
        sys.exit(EXIT_SOME_INPUTS_FAILED)


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    """The ``explain`` subcommand's arguments (handled by :func:`explain_command`)."""
    explain = sub.add_parser(
        "explain",
        help="Grad-CAM heat map of one image: where the model sees the evidence",
        description=(
            "Write the image and its Grad-CAM map side by side as a PNG; with --detect-faces, the whole photo "
            "with every face boxed and labelled, its map inside its crop square. Needs a .pt checkpoint."
        ),
    )
    explain.add_argument("image", metavar="IMAGE", help="an image file")
    explain.add_argument("--model", required=True, metavar="CHECKPOINT", help="an FP32 .pt checkpoint")
    explain.add_argument("--out", default="cam.png", metavar="FILE", help="the PNG to write (default cam.png)")
    explain.add_argument(
        "--target",
        choices=("predicted", "male", "female"),
        default="predicted",
        help="the class whose evidence to map (default: the predicted one)",
    )
    explain.add_argument(
        "--threshold", type=probability, metavar="T", help="decision threshold (default: the checkpoint's, else 0.5)"
    )
    explain.add_argument("--layer", metavar="NAME", help="the feature map to use (default: see --list-layers)")
    explain.add_argument("--list-layers", action="store_true", help="list the usable layers and their sizes, then stop")
    add_detection_arguments(explain)


def explain_command(args: argparse.Namespace) -> None:
    """Run ``gclf explain``: the PNG to --out, the prediction on stdout."""
    import torch

    from gclf.data.manifest import CLASSES
    from gclf.evaluate.explain import explain_faces_png, explain_png, load_explainable
    from gclf.evaluate.gradcam import default_layer, feature_maps

    model, meta = load_explainable(args.model)
    if args.list_layers:
        pixels = torch.zeros(1, 3, meta["image_size"], meta["image_size"])
        default = default_layer(model, pixels)
        for name, (height, width) in feature_maps(model, pixels):
            print(f"{name}  {height}x{width}{'  (default)' if name == default else ''}")
        return
    threshold = args.threshold if args.threshold is not None else meta.get("threshold")
    if threshold is None:
        threshold = 0.5
        print(f"note: {args.model} carries no threshold; using 0.5 (see --threshold)", file=sys.stderr)
    target = None if args.target == "predicted" else CLASSES.index(args.target)
    if args.detect_faces:
        from gclf.faces.detect import FaceDetector

        detector = FaceDetector(min_face_size=args.min_face_size, max_faces=args.max_faces)  # 2 threads
        found = explain_faces_png(
            model, meta, args.image, args.out, detector, threshold=threshold, target=target, layer=args.layer
        )
        for index, (face, prob, mapped) in enumerate(found):
            print(
                f"{args.image} face {index} at x={face.x:.0f} y={face.y:.0f} w={face.w:.0f} h={face.h:.0f}: "
                f"P({CLASSES[1]}) {prob:.4f}: {CLASSES[int(prob >= threshold)]}; evidence for {CLASSES[mapped]}"
            )
        print(f"{len(found)} faces mapped to {args.out}")
        return
    prob, mapped = explain_png(model, meta, args.image, args.out, threshold=threshold, target=target, layer=args.layer)
    print(
        f"{args.image}: P({CLASSES[1]}) {prob:.4f} at threshold {threshold:.2f}: {CLASSES[int(prob >= threshold)]}; "
        f"evidence for {CLASSES[mapped]} mapped to {args.out}"
    )


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` subcommand's arguments (handled by :func:`evaluate_command`)."""
    evaluate = sub.add_parser(
        "evaluate",
        help="score a trained model on any labelled dataset",
        description=(
            "Score any artifact (.pt, .onnx, OpenVINO .xml) on a labelled dataset in any layout the split "
            "stage reads, with the evaluate stage's metrics, 95 % bootstrap intervals and subgroup audit. "
            "Unreadable files are skipped and counted."
        ),
    )
    evaluate.add_argument("--data", required=True, metavar="PATH", help="the dataset folder, or a CSV manifest")
    evaluate.add_argument(
        "--format",
        choices=LABELLED_FORMATS,
        default="imagefolder",
        help="its layout, as data.format (default imagefolder: PATH/{female,male}/...)",
    )
    evaluate.add_argument("--model", required=True, metavar="ARTIFACT", help="a .pt checkpoint, .onnx or OpenVINO .xml")
    evaluate.add_argument(
        "--split", choices=("all", "test"), default="all", help="all images, or a presplit layout's test folder only"
    )
    evaluate.add_argument(
        "--threshold", type=probability, metavar="T", help="decision threshold (default: the artifact's, else 0.5)"
    )
    evaluate.add_argument("--tta", action="store_true", help="average over the artifact's TTA views")
    evaluate.add_argument("--out", metavar="FILE", help="also write the metrics to this JSON file")
    evaluate.add_argument("--threads", type=positive_int, default=2, metavar="N", help="inference threads (default 2)")
    add_detection_arguments(evaluate)
    add_align_argument(evaluate)
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="resamples for the intervals; 0 = none (default 1000)"
    )
    evaluate.add_argument(
        "--min-group-size",
        type=positive_int,
        default=30,
        metavar="N",
        help="subgroups with fewer images are marked small (default 30)",
    )


def evaluate_command(args: argparse.Namespace) -> None:
    """Run ``gclf evaluate``: metrics on stdout (and --out), skipped files and notes on stderr."""
    from gclf.evaluate.external import evaluate_artifact, scan_labelled, skipped_summary
    from gclf.io import dumps_json, write_json

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: expected 0 or more, got {args.bootstrap}")
    records, rejected = scan_labelled(args.data, args.format, args.split)
    predictor = load_predictor(args)
    report, unreadable = evaluate_artifact(
        predictor, records, bootstrap=args.bootstrap, min_group_size=args.min_group_size, progress=True
    )
    report["skipped"] = len(rejected) + len(unreadable)
    if rejected or unreadable:
        print(skipped_summary(rejected + unreadable), file=sys.stderr)
    print(dumps_json(report), end="")
    if args.out:
        write_json(args.out, report)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench`` subcommand's arguments (handled by :func:`bench_command`)."""
    bench = sub.add_parser(
        "bench",
        help="CPU speed and size of every artifact kind at any image size, with random weights",
        description=(
            "Build a model with random weights, write every artifact the quantize stage writes (static INT8 "
            "calibrated on random images) to a temporary folder, and benchmark them as the benchmark stage "
            "does: interleaved rounds, warm-up, fixed threads. For speed only; says nothing about accuracy."
        ),
    )
    bench.add_argument("--arch", default="tf_efficientnet_lite0", help="timm model name (default %(default)s)")
    bench.add_argument("--head", default="mlp", choices=("mlp", "linear"))
    bench.add_argument("--image-size", type=positive_int, default=224, help="pixels per side (default 224)")
    bench.add_argument("--batch-size", type=positive_int, default=32, help="throughput batch (default 32)")
    bench.add_argument("--threads", type=positive_int, default=2, help="CPU threads per runtime (default 2)")
    bench.add_argument("--warmup", type=positive_int, default=3, help="untimed calls per runner (default 3)")
    bench.add_argument("--repeats", type=positive_int, default=20, help="timed rounds (default 20)")
    bench.add_argument("--calibration-images", type=positive_int, default=64, help="for static INT8 (default 64)")
    bench.add_argument("--torch-compile", action="store_true", help="add an FP32 torch.compile row (slow to compile)")
    bench.add_argument("--out", metavar="FILE.json", help="also write the numbers as JSON")


def bench_command(args: argparse.Namespace) -> None:
    from gclf.bench.models import random_weight_benchmark, report_table
    from gclf.io import write_json

    report = random_weight_benchmark(
        args.arch,
        args.image_size,
        head=args.head,
        batch_size=args.batch_size,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        calibration_images=args.calibration_images,
        torch_compile=args.torch_compile,
    )
    print(f"{args.arch}, random weights, {args.image_size} px, {args.threads} threads, {args.repeats} rounds")
    print(report_table(report, args.batch_size))
    if args.out:
        write_json(args.out, report, digits=3)


def add_bench_faces_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench-faces`` subcommand's arguments (handled by :func:`bench_faces_command`)."""
    bench = sub.add_parser(
        "bench-faces",
        help="face detection on composite photos of labelled faces: recall, precision, accuracy, speed",
        description=(
            "Paste labelled face crops (a test split, say) into 640x480 composite photos, run predict "
            "--detect-faces on them, and report detection recall and precision by face size, end-to-end "
            "accuracy against the same faces' own crops, and images/s against crop-only predict."
        ),
    )
    bench.add_argument("--model", required=True, metavar="ARTIFACT", help="a .pt checkpoint, .onnx or OpenVINO .xml")
    bench.add_argument(
        "--data",
        default="data/splits/test.csv",
        metavar="PATH",
        help="labelled face crops (default %(default)s, the pipeline's test split)",
    )
    bench.add_argument(
        "--format",
        choices=("manifest", *LABELLED_FORMATS),
        default="manifest",
        help="manifest: a split manifest the split stage wrote; else as evaluate's --format (default manifest)",
    )
    bench.add_argument("--photos", type=positive_int, default=200, metavar="N", help="composites per set (default 200)")
    bench.add_argument("--seed", type=int, default=0, help="composite layout seed (default 0)")
    bench.add_argument("--threads", type=positive_int, default=2, metavar="N", help="inference threads (default 2)")
    bench.add_argument("--out", metavar="FILE.json", help="also write the numbers as JSON")


def bench_faces_command(args: argparse.Namespace) -> None:
    from gclf.bench.faces import face_benchmark, read_faces, report_table
    from gclf.bench.models import machine_facts
    from gclf.evaluate.external import labelled_faces, skipped_summary
    from gclf.io import write_json

    records, faces, unreadable = read_faces(labelled_faces(args.data, args.format))
    if unreadable:
        print(skipped_summary(unreadable), file=sys.stderr)
    if not records:
        raise UserError(f"{args.data}: none of its face images could be read")
    report = face_benchmark(args.model, records, faces, photos=args.photos, seed=args.seed, threads=args.threads)
    machine = machine_facts(args.threads)
    print(f"{args.model} on {len(records)} faces of {args.data}; {machine['cpu_model']}, {args.threads} threads")
    print(report_table(report))
    if args.out:
        write_json(args.out, {**report, "cpu_model": machine["cpu_model"]}, digits=4)


def add_bench_data_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench-data`` subcommand's arguments (handled by :func:`bench_data_command`)."""
    bench = sub.add_parser(
        "bench-data",
        help="images/s and peak memory of the training input pipeline on a dataset",
        description=(
            "Read a dataset as the training stages do (formats, decoded-image store, sampler, device transfer, "
            "augmentation with the default params): decode it into the store when cold, then time one epoch "
            "of training batches. Prints images/s and peak anonymous memory (RssAnon)."
        ),
    )
    bench.add_argument("--data", required=True, metavar="DIR", help="the dataset (csv: the manifest file)")
    bench.add_argument(
        "--format", choices=LABELLED_FORMATS, default="imagefolder", help="its layout (default %(default)s)"
    )
    bench.add_argument("--image-size", type=positive_int, default=224, metavar="S", help="pixels (default %(default)s)")
    bench.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="(default %(default)s)")
    bench.add_argument(
        "--augment", choices=("batched", "per-image"), default="batched", help="augment.backend (default %(default)s)"
    )
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default %(default)s)")
    bench.add_argument("--threads", type=positive_int, default=2, metavar="N", help="CPU threads (default 2)")
    bench.add_argument("--workers", type=int, default=0, metavar="N", help="DataLoader workers (default 0)")
    bench.add_argument(
        "--batches", type=int, default=0, metavar="N", help="time only the first N batches (default: all)"
    )
    bench.add_argument("--cache-dir", default=".cache/images", metavar="DIR", help="the store (default %(default)s)")
    bench.add_argument("--out", metavar="FILE.json", help="also write the numbers as JSON")


def bench_data_command(args: argparse.Namespace) -> None:
    from gclf.bench.data import bench_data
    from gclf.bench.models import machine_facts
    from gclf.device import select_device
    from gclf.io import dumps_json, write_json

    if args.workers < 0 or args.batches < 0:
        raise UserError("--workers and --batches: expected 0 or more")
    device = select_device(args.device, args.threads)
    report = bench_data(
        args.data,
        args.format,
        args.image_size,
        args.batch_size,
        args.augment,
        device,
        batches=args.batches,
        num_workers=args.workers,
        cache_dir=args.cache_dir,
    )
    report["cpu_model"] = machine_facts(args.threads)["cpu_model"]
    print(dumps_json(report, digits=1), end="")
    if args.out:
        write_json(args.out, report, digits=1)


def require_serve_extra() -> None:
    """One line, not an import traceback, when the optional ``serve`` extra is not installed."""
    missing = [package for module, package in SERVE_EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f'{" and ".join(missing)} not installed; install the serve extra: pip install -e ".[serve]"')


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` subcommand's arguments (handled by :func:`serve_command`)."""
    from gclf.deploy import available_cores
    from gclf.deploy.serveconfig import ServeConfig

    serve = sub.add_parser(
        "serve",
        help="serve a model over HTTP: POST /predict, GET /health, /meta, /openapi.json (needs the serve extra)",
        description=(
            "Label face images sent over HTTP with any model the pipeline writes: POST them as multipart "
            "fields named 'file' to /predict for the rows gclf predict writes. Requests that arrive close "
            'together share one model call. Needs the serve extra: pip install -e ".[serve]" (docs/serve.md).'
        ),
    )
    serve.add_argument("--model", required=True, metavar="ARTIFACT", help="a .pt checkpoint, .onnx or OpenVINO .xml")
    serve.add_argument("--tta", action="store_true", help="average over the artifact's TTA views")
    serve.add_argument(
        "--threshold", type=probability, metavar="T", help="decision threshold (default: the artifact's, else 0.5)"
    )
    add_detection_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0: all)")
    serve.add_argument("--port", type=port, default=8000, help="(default %(default)s)")
    add_server_arguments(serve, available_cores())
    serve.add_argument(
        "--max-upload-mb",
        type=positive,
        default=ServeConfig.max_upload_mb,
        metavar="MB",
        help="largest request body (default %(default)g)",
    )
    serve.add_argument(
        "--max-files",
        type=positive_int,
        default=ServeConfig.max_files,
        metavar="N",
        help="most files in one request (default %(default)s)",
    )
    serve.add_argument(
        "--max-megapixels",
        type=positive,
        default=ServeConfig.max_megapixels,
        metavar="MP",
        help="largest image, in millions of pixels, refused before it is decoded (default %(default)g)",
    )
    serve.add_argument(
        "--timeout-s",
        type=positive,
        default=ServeConfig.timeout_s,
        metavar="S",
        help="a request body must have arrived this long after its headers (default %(default)g)",
    )
    serve.add_argument(
        "--header-timeout-s",
        type=positive,
        default=ServeConfig.header_timeout_s,
        metavar="S",
        help="a request's headers must have arrived this long after it began, else the connection is "
        "closed (default %(default)g)",
    )
    serve.add_argument(
        "--deadline-s",
        type=positive,
        default=ServeConfig.deadline_s,
        metavar="S",
        help="a request not answered this long after its headers gets 503 and its work is dropped "
        "(default %(default)g)",
    )
    serve.add_argument(
        "--max-queue",
        type=positive_int,
        default=ServeConfig.max_queue,
        metavar="N",
        help="requests each worker takes at once; more get 503 at once (default %(default)s)",
    )
    serve.add_argument(
        "--max-queue-images",
        type=positive_int,
        default=ServeConfig.max_queue_images,
        metavar="N",
        help="images waiting for the model in each worker; a request that would pass it gets 503 (default %(default)s)",
    )


def add_server_arguments(parser: argparse.ArgumentParser, cores: int) -> None:
    """``--workers``, ``--max-batch`` and ``--max-wait-ms`` (serve and bench-serve)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=cores,
        metavar="N",
        help=f"server processes, each with cores/N inference threads (default: one per core, {cores})",
    )
    parser.add_argument(
        "--max-batch", type=positive_int, default=32, metavar="N", help="most images per model call (default 32)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=non_negative,
        default=5.0,
        metavar="MS",
        help="longest an image waits for others to share its model call (default %(default)g)",
    )


def serve_command(args: argparse.Namespace) -> None:
    require_serve_extra()
    from gclf.deploy.serve import serve
    from gclf.deploy.serveconfig import ServeConfig
    from gclf.export.artifact import read_artifact_meta

    read_artifact_meta(args.model)  # a bad --model is one line here, not a failing start in every worker
    serve(
        ServeConfig(
            model=args.model,
            detect_faces=args.detect_faces,
            min_face_size=args.min_face_size,
            max_faces=args.max_faces,
            tta=args.tta,
            threshold=args.threshold,
            host=args.host,
            port=args.port,
            workers=args.workers,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_upload_mb=args.max_upload_mb,
            max_files=args.max_files,
            max_megapixels=args.max_megapixels,
            timeout_s=args.timeout_s,
            header_timeout_s=args.header_timeout_s,
            deadline_s=args.deadline_s,
            max_queue=args.max_queue,
            max_queue_images=args.max_queue_images,
        )
    )


def add_bench_serve_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench-serve`` subcommand's arguments (handled by :func:`bench_serve_command`)."""
    from gclf.deploy import available_cores
    from gclf.deploy.serveconfig import ServeConfig
    from gclf.params import DataParams, ModelParams

    cores = available_cores()
    bench = sub.add_parser(
        "bench-serve",
        help="load test of gclf serve: images/s and latency at 1, 8, 64 clients against in-process predict",
        description=(
            "Time in-process gclf predict on a set of face images, then start gclf serve on a free port and "
            "post the same images from 1, 8 and 64 concurrent clients: images/s, p50/p99 latency and errors "
            "per concurrency, and each rate as a fraction of the in-process one. Needs the serve extra."
        ),
    )
    bench.add_argument(
        "--model",
        metavar="ARTIFACT",
        help="the model to serve (default: random weights of --arch at --image-size, for speed only)",
    )
    bench.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="PATH",
        help="face images, as gclf predict takes them (default: ../shared/data/utkface if present, else synthetic)",
    )
    bench.add_argument("--count", type=positive_int, default=512, metavar="N", help="images used (default 512)")
    bench.add_argument(
        "--concurrency", type=positive_int, nargs="+", default=[1, 8, 64], metavar="N", help="(default 1 8 64)"
    )
    bench.add_argument(
        "--seconds", type=positive, default=10.0, metavar="S", help="timed load per concurrency (default 10)"
    )
    add_server_arguments(bench, cores)
    bench.add_argument("--arch", default=ModelParams().arch, help="without --model (default %(default)s)")
    bench.add_argument("--head", default=ModelParams().head, choices=("mlp", "linear"))
    bench.add_argument(
        "--image-size", type=positive_int, default=DataParams().image_size, help="without --model (default %(default)s)"
    )
    bench.add_argument(
        "--overload",
        type=non_negative_int,
        default=1000,
        metavar="N",
        help="then send N requests of a 1 MB PNG at once (default %(default)s; 0: skip)",
    )
    bench.add_argument(
        "--stalled",
        type=non_negative_int,
        default=200,
        metavar="N",
        help="then open N sockets that send half a request line and stall (default %(default)s; 0: skip)",
    )
    bench.add_argument(
        "--header-timeout-s",
        type=positive,
        default=ServeConfig.header_timeout_s,
        metavar="S",
        help="the server's header deadline, which the stalled sockets wait out (default %(default)g)",
    )
    bench.add_argument("--out", metavar="FILE.json", help="also write the numbers as JSON")


def bench_serve_command(args: argparse.Namespace) -> None:
    require_serve_extra()
    from gclf.bench.serve import bench_serve, report_table
    from gclf.deploy import available_cores
    from gclf.io import write_json

    report = bench_serve(
        args.model,
        args.images,
        count=args.count,
        concurrency=args.concurrency,
        seconds=args.seconds,
        workers=args.workers,
        threads=available_cores(),
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        arch=args.arch,
        head=args.head,
        image_size=args.image_size,
        overload_requests=args.overload,
        stalled_sockets=args.stalled,
        header_timeout_s=args.header_timeout_s,
    )
    print(
        f"{report['model']}, {report['image_size']} px, {report['images']} images; {report['cpu_model']}, "
        f"{report['cores']} cores; {report['workers']} workers x {report['threads_per_worker']} threads; "
        f"in-process: gclf predict's Predictor, {report['cores']} threads, batch {report['max_batch']}"
    )
    print(report_table(report))
    if args.out:
        write_json(args.out, report, digits=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gclf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-params", help="validate a params file and print it as YAML, defaults filled in")
    check.add_argument("path", nargs="?", default="params.yaml")
    add_predict_parser(sub)
    add_explain_parser(sub)
    add_evaluate_parser(sub)
    add_bench_parser(sub)
    add_bench_faces_parser(sub)
    add_bench_data_parser(sub)
    add_serve_parser(sub)
    add_bench_serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "check-params":
            from gclf.params import load_params, params_yaml

            print(params_yaml(load_params(args.path)), end="")
        elif args.command == "predict":
            predict_command(args)
        elif args.command == "explain":
            explain_command(args)
        elif args.command == "evaluate":
            evaluate_command(args)
        elif args.command == "bench":
            bench_command(args)
        elif args.command == "bench-faces":
            bench_faces_command(args)
        elif args.command == "bench-data":
            bench_data_command(args)
        elif args.command == "serve":
            serve_command(args)
        elif args.command == "bench-serve":
            bench_serve_command(args)
    except UserError as e:
        fail(str(e))
