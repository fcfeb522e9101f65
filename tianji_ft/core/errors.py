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


_OS_ADVICE = {
    "ENOSPC": "free some space or write elsewhere",
    "EDQUOT": "free some space or write elsewhere",
    "EROFS": "the file system is read-only; write elsewhere",
    "EACCES": "no permission; write elsewhere or fix the permissions",
    "EPERM": "no permission; write elsewhere or fix the permissions",
    "EISDIR": "it is a folder; give a file",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "ENOENT": "check the path",
    "EFBIG": "the file is larger than this file system allows; write elsewhere",
}


def os_error_line(err: OSError) -> str:
    """An OSError as one line: the path, what went wrong, what to do."""
    import errno

    code = errno.errorcode.get(err.errno or 0, "")
    where = err.filename if err.filename is not None else "a file"
    what = err.strerror or type(err).__name__
    advice = _OS_ADVICE.get(code)
    return f"{where}: {what}" + (f"; {advice}" if advice else "") + " (nothing half-written is left)"


def did_you_mean(word: str, choices) -> str:
    """``; did you mean 'X'?`` for the closest of ``choices``, or ``; known: a, b, c``."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(choices)}"
