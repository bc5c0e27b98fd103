"""User-facing errors: a stage or command prints the message on one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (params, data, paths, artifacts), not a bug in gclf."""


class ModelError(UserError):
    """A model or artifact that cannot be built or loaded, with a message for the user."""


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: 128 + 2
EXIT_SOME_INPUTS_FAILED = 3  # gclf predict: some inputs could not be read, the others were predicted
