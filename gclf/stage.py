"""What every ``stages/<name>.py`` script shares: load and validate params, run, and the error policy.

A user's mistake (bad params, data or artifact: a :class:`~gclf.errors.UserError`) ends with one
line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from gclf.errors import EXIT_USER_ERROR, UserError
from gclf.params import Params, load_params


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with :data:`~gclf.errors.EXIT_USER_ERROR`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Load and validate params, then run a stage's ``main(params)``."""
    try:
        main(load_params(params_path))
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; the next run resumes training from the last finished epoch")
