"""Entry points: the ``gclf`` command, and the error policy every stage script shares.

A user's mistake (bad params, data or artifact) ends with one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from gclf.errors import EXIT_USER_ERROR, UserError


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_stage(main: Callable, params_path: str = "params.yaml") -> None:
    """Load and validate params, then run a stage's ``main(params)``."""
    from gclf.params import load_params

    try:
        main(load_params(params_path))
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; the next run resumes training from the last finished epoch")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gclf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-params", help="validate a params file and print it as YAML, defaults filled in")
    check.add_argument("path", nargs="?", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-params":
            import dataclasses

            import yaml

            from gclf.params import load_params

            params = dataclasses.asdict(
                load_params(args.path),
                dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items},
            )
            print(yaml.safe_dump(params, sort_keys=False), end="")
    except UserError as e:
        fail(str(e))
