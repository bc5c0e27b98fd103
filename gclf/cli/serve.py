"""``gclf serve`` (a model over HTTP) and ``gclf bench-serve`` (its load test); both need the
optional ``serve`` extra."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util

from gclf.cli.options import (
    add_architecture,
    add_detection_arguments,
    add_json_out,
    add_model,
    add_threshold,
    add_tta,
    non_negative,
    non_negative_int,
    port,
    positive,
    positive_int,
)
from gclf.errors import UserError
from gclf.params import DataParams

SERVE_EXTRA = {  # module: its package in pyproject.toml's serve extra
    "fastapi": "fastapi",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
    "aiohttp": "aiohttp",
}
# serve's limits, each a ServeConfig field of the same name as its option: (field, type, metavar, help)
LIMITS = (
    ("max_upload_mb", positive, "MB", "largest request body (default %(default)g)"),
    ("max_files", positive_int, "N", "most files in one request (default %(default)s)"),
    (
        "max_megapixels",
        positive,
        "MP",
        "largest image, in millions of pixels, refused before it is decoded (default %(default)g)",
    ),
    ("timeout_s", positive, "S", "a request body must have arrived this long after its headers (default %(default)g)"),
    (
        "header_timeout_s",
        positive,
        "S",
        "a request's headers must have arrived this long after it began, else the connection is "
        "closed (default %(default)g)",
    ),
    (
        "deadline_s",
        positive,
        "S",
        "a request not answered this long after its headers gets 503 and its work is dropped (default %(default)g)",
    ),
    ("max_queue", positive_int, "N", "requests each worker takes at once; more get 503 at once (default %(default)s)"),
    (
        "max_queue_images",
        positive_int,
        "N",
        "images waiting for the model in each worker; a request that would pass it gets 503 (default %(default)s)",
    ),
)


def require_serve_extra() -> None:
    """One line, not an import traceback, when the optional ``serve`` extra is not installed."""
    missing = [package for module, package in SERVE_EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f'{" and ".join(missing)} not installed; install the serve extra: pip install -e ".[serve]"')


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
    add_model(serve)
    add_tta(serve)
    add_threshold(serve)
    add_detection_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; 0.0.0.0: all)")
    serve.add_argument("--port", type=port, default=8000, help="(default %(default)s)")
    add_server_arguments(serve, available_cores())
    for field, kind, metavar, text in LIMITS:
        flag = "--" + field.replace("_", "-")
        serve.add_argument(flag, type=kind, default=getattr(ServeConfig, field), metavar=metavar, help=text)
    serve.set_defaults(run=serve_command)


def serve_command(args: argparse.Namespace) -> None:
    require_serve_extra()
    from gclf.deploy.serve import serve
    from gclf.deploy.serveconfig import ServeConfig
    from gclf.export.artifact import read_artifact_meta

    read_artifact_meta(args.model)  # a bad --model is one line here, not a failing start in every worker
    # every ServeConfig field is an option of serve's, of the same name
    serve(ServeConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeConfig)}))


def add_bench_serve_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench-serve`` subcommand's arguments (handled by :func:`bench_serve_command`)."""
    from gclf.deploy import available_cores
    from gclf.deploy.serveconfig import ServeConfig

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
    add_model(
        bench, "the model to serve (default: random weights of --arch at --image-size, for speed only)", required=False
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
    add_architecture(bench, "without --model (default %(default)s)")
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
    add_json_out(bench)
    bench.set_defaults(run=bench_serve_command)


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
