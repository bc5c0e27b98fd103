"""What every ``stages/<name>.py`` script shares: load and validate params, run, and the error policy.

A user's mistake (bad params, data or artifact: a :class:`~gclf.errors.UserError`) ends with one
line on stderr and exit code 2; Ctrl-C with one line that says what was kept and exit code 130;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Callable, NoReturn

from gclf.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from gclf.outputs import output_set
from gclf.params import Params, load_params


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with :data:`~gclf.errors.EXIT_USER_ERROR`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_stage(
    main: Callable[[Params], None],
    params_path: str = "params.yaml",
    state: str | None = None,
    stage: str | None = None,
) -> None:
    """Load and validate params, then run a stage's ``main(params)``. ``state``: the resumable
    training state the stage keeps after each epoch (training stages only). ``stage``: its name in
    dvc.yaml, whose outputs ``main`` writes as one set (:func:`gclf.outputs.output_set`); a bad
    params file stops before the set is touched."""
    try:
        params = load_params(params_path)
        with output_set(stage) if stage else nullcontext():
            main(params)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        kept = (
            f"the training state after the last finished epoch is kept in {state}; the next `dvc repro` resumes from it"
            if state
            else "nothing is kept to resume from; the next `dvc repro` runs this stage again"
        )
        if stage:
            kept += "; until then its outputs stay marked incomplete, and readers refuse them"
        print(f"interrupted: {kept}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
