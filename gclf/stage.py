"""What every ``stages/<name>.py`` script shares: load and validate params, run, and the error policy.

A user's mistake (bad params, data or artifact: a :class:`~gclf.errors.UserError`) ends with one
line on stderr and exit code 2; Ctrl-C with one line that says what was kept and exit code 130;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from gclf.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from gclf.params import Params, load_params


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with :data:`~gclf.errors.EXIT_USER_ERROR`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml", state: str | None = None) -> None:
    """Load and validate params, then run a stage's ``main(params)``. ``state``: the resumable
    training state the stage keeps after each epoch (training stages only)."""
    try:
        main(load_params(params_path))
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        kept = (
            f"the training state after the last finished epoch is kept in {state}; the next `dvc repro` resumes from it"
            if state
            else "nothing is kept to resume from; the next `dvc repro` runs this stage again"
        )
        print(f"interrupted: {kept}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
