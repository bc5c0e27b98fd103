"""``gclf predict``: label face images, or the faces in photos, with any artifact the pipeline writes."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gclf.cli.options import (
    add_align_argument,
    add_detection_arguments,
    add_model,
    add_threads,
    add_threshold,
    add_tta,
    load_predictor,
    positive_int,
    shard,
)
from gclf.errors import EXIT_SOME_INPUTS_FAILED, EXIT_USER_ERROR, UserError
from gclf.stage import fail

if TYPE_CHECKING:  # imported where used: it loads torch, ONNX Runtime and OpenVINO
    from gclf.deploy.predict import Predictor
    from gclf.deploy.rows import Tally


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
    add_model(predict)
    add_tta(predict, "average over the artifact's TTA views (flip by default)")
    add_threshold(predict, "decision threshold (default: the one stored in the artifact)", float)
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
    add_threads(predict)
    add_detection_arguments(predict)
    add_align_argument(predict)
    predict.add_argument("--save-crops", metavar="DIR", help="with --detect-faces: save each face crop as a PNG here")
    predict.set_defaults(run=predict_command)


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
