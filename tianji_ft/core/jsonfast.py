"""JSON encoding and decoding: orjson when it is installed, else the stdlib.

orjson parses and serialises 3-10x faster, which is what lets JSONL
conversion stream at hundreds of thousands of records a second. Output is
the same either way: UTF-8, Chinese kept readable, no spaces.
"""

from __future__ import annotations

import json
import re
from itertools import repeat

try:  # optional speed-up; every caller works without it
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

JSONDecodeError = json.JSONDecodeError

# orjson reads an integer past 64 bits as a float, silently (-9223372036854775809
# becomes -9.223372036854776e+18). A number that long has 19 digits in a row
# somewhere, so text without such a run parses exactly; text with one (a bank
# card number in a string will do) goes to the stdlib, which is exact.
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", b"\0" * 10)
_RUN = b"\0" * 19
_LONG_RUN_TEXT = re.compile(r"[0-9]{19}")


def may_lose_digits(data) -> bool:
    """Whether ``data`` (JSON bytes or text) holds 19 or more digits in a row."""
    if isinstance(data, str):
        return _LONG_RUN_TEXT.search(data) is not None
    return bytes(data).translate(_DIGITS_TO_NUL).find(_RUN) != -1


def block_may_lose_digits(lines: list) -> bool:
    """:func:`may_lose_digits` for a block of JSONL lines (bytes), in one pass over them
    (about a tenth of what parsing them costs); always False without orjson."""
    return orjson is not None and b"".join(lines).translate(_DIGITS_TO_NUL).find(_RUN) != -1


def _std_dumps(obj) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a \ud800 escape) is not Unicode and has no
        # UTF-8 form: written as the escape it was read from, the JSON reads
        # back the same. (Commands reject such records before they reach an
        # output; this keeps the rejects file and copies faithful.)
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")


def std_loads(data):
    """The stdlib parser: its errors carry the line and column we report."""
    return json.loads(data)


if orjson is not None:
    # Raises on anything unusual; callers fall back to loads. Exact unless
    # block_may_lose_digits says otherwise: callers check a block first.
    fast_loads = orjson.loads

    def loads(data):
        if may_lose_digits(data):
            return json.loads(data)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # orjson refuses a few things the stdlib accepts (integers past
            # 64 bits, NaN); let the stdlib decide, and word the error.
            return json.loads(data)

    def dumps(obj) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes."""
        try:
            return orjson.dumps(obj, default=str)
        except TypeError:
            return _std_dumps(obj)

    def dumps_line(obj, _dumps=orjson.dumps, _opt=orjson.OPT_APPEND_NEWLINE) -> bytes:
        """``dumps(obj)`` plus a newline, without copying the bytes again."""
        try:
            return _dumps(obj, option=_opt)
        except TypeError:  # a big integer or a non-text key: the stdlib copes
            return _std_dumps(obj) + b"\n"

    def dumps_lines(objs: list, _dumps=orjson.dumps, _opt=orjson.OPT_APPEND_NEWLINE) -> bytes:
        """``dumps_line`` of each object, joined: the loop runs in C."""
        try:
            return b"".join(map(_dumps, objs, repeat(None, len(objs)), repeat(_opt, len(objs))))
        except TypeError:
            return b"".join(map(dumps_line, objs))

else:  # pragma: no cover
    loads = fast_loads = std_loads
    dumps = _std_dumps

    def dumps_line(obj) -> bytes:
        return _std_dumps(obj) + b"\n"

    def dumps_lines(objs: list) -> bytes:
        return b"".join(map(dumps_line, objs))


if orjson is not None:
    def encodes(obj, _dumps=orjson.dumps) -> bool:
        """True when orjson serialises ``obj`` as it is: then it holds no lone
        surrogate (nor a big integer or a non-text key). A cheap first check
        (a fraction of a microsecond a record); False means "look closer"."""
        try:
            _dumps(obj)
            return True
        except TypeError:
            return False
else:  # pragma: no cover
    def encodes(obj) -> bool:
        return False
