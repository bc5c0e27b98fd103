"""The ``gclf`` command: check params, label images, explain, evaluate, serve and benchmark models.

The argparse layer only, one module per group of subcommands (:mod:`~gclf.cli.predict`,
:mod:`~gclf.cli.evaluate`, :mod:`~gclf.cli.bench`, :mod:`~gclf.cli.serve`; the options they share in
:mod:`~gclf.cli.options`): each subcommand parses its arguments, calls the library and prints the
result; a :class:`~gclf.errors.UserError` ends with one line on stderr and exit code 2, as in the
stages (:func:`gclf.stage.fail`).
"""

from __future__ import annotations

import argparse

from gclf.cli.bench import add_bench_data_parser, add_bench_faces_parser, add_bench_parser, add_bench_recrop_parser
from gclf.cli.evaluate import add_evaluate_parser, add_explain_parser
from gclf.cli.predict import add_predict_parser
from gclf.cli.serve import add_bench_serve_parser, add_serve_parser
from gclf.errors import UserError
from gclf.params import load_params, params_yaml
from gclf.stage import fail


def check_params_command(args: argparse.Namespace) -> None:
    print(params_yaml(load_params(args.path)), end="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gclf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-params", help="validate a params file and print it as YAML, defaults filled in")
    check.add_argument("path", nargs="?", default="params.yaml")
    check.set_defaults(run=check_params_command)
    for add_parser in (
        add_predict_parser,
        add_explain_parser,
        add_evaluate_parser,
        add_bench_parser,
        add_bench_faces_parser,
        add_bench_data_parser,
        add_bench_recrop_parser,
        add_serve_parser,
        add_bench_serve_parser,
    ):
        add_parser(sub)
    args = parser.parse_args(argv)
    try:
        args.run(args)  # the handler its subcommand's parser set
    except UserError as e:
        fail(str(e))
