"""``gclf explain`` (a Grad-CAM map of one image) and ``gclf evaluate`` (an artifact scored on any
labelled dataset)."""

from __future__ import annotations

import argparse
import sys

from gclf.cli.options import (
    add_align_argument,
    add_detection_arguments,
    add_json_out,
    add_model,
    add_threads,
    add_threshold,
    add_tta,
    load_predictor,
    positive_int,
)
from gclf.data.formats import LABELLED_FORMATS
from gclf.errors import UserError


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
    add_model(explain, "an FP32 .pt checkpoint", "CHECKPOINT")
    explain.add_argument("--out", default="cam.png", metavar="FILE", help="the PNG to write (default cam.png)")
    explain.add_argument(
        "--target",
        choices=("predicted", "male", "female"),
        default="predicted",
        help="the class whose evidence to map (default: the predicted one)",
    )
    add_threshold(explain, "decision threshold (default: the checkpoint's, else 0.5)")
    explain.add_argument("--layer", metavar="NAME", help="the feature map to use (default: see --list-layers)")
    explain.add_argument("--list-layers", action="store_true", help="list the usable layers and their sizes, then stop")
    add_detection_arguments(explain)
    explain.set_defaults(run=explain_command)


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
    add_model(evaluate)
    evaluate.add_argument(
        "--split", choices=("all", "test"), default="all", help="all images, or a presplit layout's test folder only"
    )
    add_threshold(evaluate)
    add_tta(evaluate)
    add_json_out(evaluate, "also write the metrics to this JSON file", "FILE")
    add_threads(evaluate)
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
    evaluate.set_defaults(run=evaluate_command)


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
