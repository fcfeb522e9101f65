"""The one exception type users see as a single line."""


class UserError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``str(err)`` as one line (``tianji-ft: error: ...``) and
    exits with ``exit_code``; no traceback. The message should name the file
    or record, say what is wrong, and say what to do.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class StepFailed(UserError):
    """An external step (training, conversion, ...) exited non-zero."""

    def __init__(self, step: str, returncode: int, detail: str = ""):
        msg = f"step '{step}' failed with exit code {returncode}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, exit_code=returncode if 0 < returncode < 256 else 1)
        self.step = step
        self.returncode = returncode
