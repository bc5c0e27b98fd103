"""The benchmarks outside the pipeline: ``gclf bench`` (every artifact kind with random weights),
``gclf bench-faces`` (face detection on composite photos), ``gclf bench-data`` (the training input
pipeline) and ``gclf bench-recrop`` (alignment against face crops framed as the web frames them)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gclf.cli.options import add_architecture, add_json_out, add_model, add_threads, positive_int
from gclf.data.formats import LABELLED_FORMATS
from gclf.errors import UserError
from gclf.params import AUGMENT_BACKENDS, AugmentParams


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
    add_architecture(bench, "timm model name (default %(default)s)")
    bench.add_argument("--image-size", type=positive_int, default=224, help="pixels per side (default 224)")
    bench.add_argument("--batch-size", type=positive_int, default=32, help="throughput batch (default 32)")
    add_threads(bench, "CPU threads per runtime", metavar=None)
    bench.add_argument("--warmup", type=positive_int, default=3, help="untimed calls per runner (default 3)")
    bench.add_argument("--repeats", type=positive_int, default=20, help="timed rounds (default 20)")
    bench.add_argument("--calibration-images", type=positive_int, default=64, help="for static INT8 (default 64)")
    bench.add_argument("--torch-compile", action="store_true", help="add an FP32 torch.compile row (slow to compile)")
    add_json_out(bench)
    bench.set_defaults(run=bench_command)


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


def add_face_crops(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data`` and ``--format``: an artifact and the labelled face crops it is
    benchmarked on (bench-faces, bench-recrop)."""
    add_model(parser)
    parser.add_argument(
        "--data",
        default="data/splits/test.csv",
        metavar="PATH",
        help="labelled face crops (default %(default)s, the pipeline's test split)",
    )
    parser.add_argument(
        "--format",
        # "manifest" is gclf.evaluate.external.MANIFEST, written out: that module loads torch
        choices=("manifest", *LABELLED_FORMATS),
        default="manifest",
        help="manifest: a split manifest the split stage wrote; else as evaluate's --format (default manifest)",
    )


def print_face_report(args: argparse.Namespace, report: dict[str, Any], table: str, measured: str) -> None:
    """The header, ``table`` and --out of bench-faces and bench-recrop; ``measured`` says on what."""
    from gclf.bench.harness import machine_facts
    from gclf.io import write_json

    cpu = machine_facts(args.threads)["cpu_model"]
    print(f"{args.model} on {measured} of {args.data}; {cpu}, {args.threads} threads")
    print(table)
    if args.out:
        write_json(args.out, {**report, "cpu_model": cpu}, digits=4)


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
    add_face_crops(bench)
    bench.add_argument("--photos", type=positive_int, default=200, metavar="N", help="composites per set (default 200)")
    bench.add_argument("--seed", type=int, default=0, help="composite layout seed (default 0)")
    add_threads(bench)
    add_json_out(bench)
    bench.set_defaults(run=bench_faces_command)


def bench_faces_command(args: argparse.Namespace) -> None:
    from gclf.bench.faces import face_benchmark, read_faces, report_table
    from gclf.evaluate.external import labelled_faces, skipped_summary

    records, faces, unreadable = read_faces(labelled_faces(args.data, args.format))
    if unreadable:
        print(skipped_summary(unreadable), file=sys.stderr)
    if not records:
        raise UserError(f"{args.data}: none of its face images could be read")
    report = face_benchmark(args.model, records, faces, photos=args.photos, seed=args.seed, threads=args.threads)
    print_face_report(args, report, report_table(report), f"{len(records)} faces")


def add_bench_recrop_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench-recrop`` subcommand's arguments (handled by :func:`bench_recrop_command`)."""
    bench = sub.add_parser(
        "bench-recrop",
        help="does alignment undo the framing of face crops from the web? accuracy on re-cropped test chips",
        description=(
            "Re-crop labelled face chips as crops from the web come (framed looser or tighter, off centre, "
            "rolled, cut at the forehead or the chin) and label the originals and the re-crops as gclf "
            "predict does, without alignment and with it: the four accuracies, and how far the re-crops' "
            "landmarks lie from their chips' own, as they are and aligned. Needs dlib's landmark model "
            "(docs/predict.md#alignment)."
        ),
    )
    add_face_crops(bench)
    bench.add_argument("--count", type=positive_int, default=1000, help="chips, a seeded sample (default 1000)")
    bench.add_argument("--seed", type=int, default=0, help="sample and framing seed (default 0)")
    add_threads(bench)
    add_json_out(bench)
    bench.set_defaults(run=bench_recrop_command)


def bench_recrop_command(args: argparse.Namespace) -> None:
    from gclf.bench.recrop import recrop_benchmark, report_table
    from gclf.evaluate.external import labelled_faces, skipped_summary

    records = labelled_faces(args.data, args.format)
    report, unreadable = recrop_benchmark(args.model, records, args.count, args.seed, args.threads)
    if unreadable:
        print(skipped_summary(unreadable), file=sys.stderr)
    print_face_report(args, report, report_table(report), f"{report['chips']} chips")


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
        "--augment",
        choices=AUGMENT_BACKENDS,
        default=AugmentParams().backend,
        help="augment.backend (default %(default)s)",
    )
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default %(default)s)")
    add_threads(bench, "CPU threads")
    bench.add_argument("--workers", type=int, default=0, metavar="N", help="DataLoader workers (default 0)")
    bench.add_argument(
        "--batches", type=int, default=0, metavar="N", help="time only the first N batches (default: all)"
    )
    bench.add_argument("--cache-dir", default=".cache/images", metavar="DIR", help="the store (default %(default)s)")
    add_json_out(bench)
    bench.set_defaults(run=bench_data_command)


def bench_data_command(args: argparse.Namespace) -> None:
    from gclf.bench.data import bench_data
    from gclf.bench.harness import machine_facts
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
