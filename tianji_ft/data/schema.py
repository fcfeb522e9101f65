"""XTuner's single-file conversation format: the record type, its validation,
and the readers and writers of ``.json`` / ``.jsonl`` files.

A record::

    {"conversation": [
        {"system": "你是一位医生", "input": "头疼怎么办？", "output": "先休息……"},
        {"input": "还是疼呢？", "output": "请及时就医。"}
    ]}

``system`` is optional. In the first turn it is the system prompt. A later
turn may carry one too: XTuner renders it as a system message before that
turn's input, which is how MS-Agent tool responses are trained
(``msagent_react_map_fn`` produces such turns); such a turn may have an empty
``input``. Every other turn needs a non-empty ``input``, and every turn a
non-empty ``output``. Keys other than ``conversation`` at the top level are
allowed (XTuner ignores them); keys other than system/input/output inside a
turn are not.

Readers stream: JSONL a block of lines at a time, JSON arrays element by
element (the array is never held whole), so memory stays flat however large
the file. Files in an encoding that is not ASCII-compatible (UTF-16, UTF-32)
are decoded as text line by line instead of split on ``b"\\n"`` bytes.

Text must be Unicode: a string holding a lone surrogate (a ``\\ud800``
escape without its pair, which JSON parsers accept but no UTF-8 file or
tokenizer can hold) makes the record invalid (:func:`lone_surrogate`).
NUL and U+10FFFF are ordinary characters.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, List, TypedDict

from tianji_ft.core.jsonfast import (block_may_lose_digits, dumps, dumps_line, dumps_lines, encodes, fast_loads, loads,
                                     std_loads)
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open

TURN_KEYS = frozenset(("system", "input", "output"))
JSON_SUFFIXES = (".jsonl", ".json")


class Turn(TypedDict, total=False):
    system: str
    input: str
    output: str


class Record(TypedDict):
    conversation: List[Turn]


def record_problems(record: Any) -> list[str]:
    """What is wrong with ``record`` as a conversation record (empty list: nothing)."""
    surrogate = lone_surrogate(record)
    problems = [surrogate_problem(*surrogate)] if surrogate else []
    if not isinstance(record, dict):
        return problems + [f"record is a JSON {_json_type(record)}, not an object"]
    conv = record.get("conversation")
    if conv is None:
        keys = ", ".join(map(show, record)) or "none"
        return problems + [f"missing 'conversation' (keys present: {keys}); convert it first with 'tianji-ft data convert'"]
    if not isinstance(conv, list) or not conv:
        return problems + ["'conversation' must be a non-empty list of turns"]
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            problems.append(f"turn {i}: a JSON {_json_type(turn)}, not an object")
            continue
        unknown = [k for k in turn if k not in TURN_KEYS]
        if unknown:
            problems.append(f"turn {i}: unknown key(s) {', '.join(repr(show(k)) for k in unknown)}; "
                            "allowed: system, input, output")
        for key in ("system", "input", "output"):
            if key in turn and not isinstance(turn[key], str):
                problems.append(f"turn {i}: '{key}' is a JSON {_json_type(turn[key])}, not text")
        if "output" not in turn:
            problems.append(f"turn {i}: missing 'output'")
        elif isinstance(turn["output"], str) and not turn["output"].strip():
            problems.append(f"turn {i}: empty 'output'")
        has_system = isinstance(turn.get("system"), str) and turn["system"].strip()
        if "input" not in turn:
            problems.append(f"turn {i}: missing 'input'")
        elif isinstance(turn["input"], str) and not turn["input"].strip() and not has_system:
            problems.append(f"turn {i}: empty 'input'")
    return problems


_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters that would break a one-line message: controls, line and paragraph
# separators, and lone surrogates (which cannot even be printed).
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def show(text: Any) -> str:
    """``text`` safe inside a one-line message: control characters, line
    separators and lone surrogates written as escapes (Chinese stays readable)."""
    text = text if isinstance(text, str) else str(text)
    return _UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def lone_surrogate(value: Any) -> tuple[str, str] | None:
    """Where a parsed JSON value holds a lone surrogate, and which one:
    ``("conversation[0].input", "\\ud800")``; None when it holds none.

    JSON text may spell one (``"\\ud800"``) and Python's parser accepts it,
    but it is not a character: it cannot be written as UTF-8, and tokenizers
    refuse it. Looking costs a fraction of a microsecond for the usual record.
    """
    if encodes(value):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return where or "the record", f"\\u{ord(found.group()):04x}"
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (found := _SURROGATE.search(key)):
                    return f"{where + ' ' if where else ''}key '{show(key)}'", f"\\u{ord(found.group()):04x}"
            for key, sub in reversed(list(item.items())):
                name = show(key)
                stack.append((sub, f"{where}.{name}" if where else name))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
    return None


def surrogate_problem(where: str, char: str) -> str:
    """The one wording of a lone surrogate, for a problem line or a reject's detail."""
    return (f"{where}: text with a lone surrogate ({char}, half of a UTF-16 pair), which is not valid Unicode; "
            "fix or remove it at the source")


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


# ----------------------------------------------------------------- reading

def check_encoding(encoding: str) -> str:
    """The codec name of ``encoding``, or a one-line :class:`UserError` when
    Python knows no such text encoding (a typo, or ``hex``/``rot13``)."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise UserError(f"unknown text encoding '{show(encoding)}' (--encoding); give one such as utf-8, gb18030, "
                        "big5, utf-16 or utf-32")
    return info.name


_ASCII_SAMPLE = '\n\r\t {}[]",:-+.0123456789abcdefnrtulsEABCDF\\/'


@functools.lru_cache(maxsize=64)
def ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes newlines and JSON's punctuation as their
    ASCII bytes (UTF-8, GB18030, Big5, ...), so a JSONL file can be split on
    ``b"\n"`` before decoding; False for UTF-16 and UTF-32."""
    name = check_encoding(encoding)
    if name == "utf-8-sig":
        return True  # the byte readers drop the BOM themselves
    try:
        return _ASCII_SAMPLE.encode(name) == _ASCII_SAMPLE.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def _byte_encoding(encoding: str) -> str:
    """The encoding a byte reader decodes lines with (``utf-8`` for ``utf-8-sig``)."""
    name = check_encoding(encoding)
    return "utf-8" if name == "utf-8-sig" else name


def iter_json_values(path: str | Path, encoding: str = "utf-8", *, need_records: bool = False
                     ) -> Iterator[tuple[int, Any]]:
    """``(index, value)`` for every record of a JSON or JSONL file.

    Accepts JSONL, a JSON array, a single JSON object, or whitespace-separated
    JSON values, whatever the extension says (tutorials write JSON arrays
    into files named ``.jsonl``). Blank lines are not records. Raises
    :class:`UserError` naming the file, line and column of malformed JSON,
    and saying so when the file is not in ``encoding``; with
    ``need_records``, also for a file without any record.
    """
    path = Path(path)
    first = _first_char(path, encoding)
    if first is None:
        raise UserError(f"{path}: the file is empty; expected JSON or JSONL records")
    # The generator is returned, not wrapped: this is the hot loop of every command.
    if first != "[" and path.suffix.lower() == ".jsonl":
        return _iter_jsonl(path, encoding, need_records)
    return _iter_json_text(path, encoding, need_records)


def iter_records(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """Like :func:`iter_json_values`, but a file without any record is an error."""
    return iter_json_values(path, encoding, need_records=True)


def _no_records(path: Path) -> UserError:
    return UserError(f"{path}: no records (an empty JSON array)")


_JSON_SPACE = " \t\r\n"


def _first_char(path: Path, encoding: str = "utf-8") -> str | None:
    """The first character of ``path`` that is not whitespace or a BOM; None for an empty file."""
    text = not ascii_compatible(encoding)
    try:
        with open(path, "rb") as fh:
            if text:
                return _first_text_char(path, fh, encoding)
            head = fh.read(4096)
            while head:
                stripped = head.lstrip(codecs.BOM_UTF8).lstrip()
                if stripped:
                    return stripped[:1].decode("latin-1")
                head = fh.read(4096)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give a file") from None
    return None


def _first_text_char(path: Path, fh, encoding: str) -> str | None:
    decoder = codecs.getincrementaldecoder(encoding)()
    while True:
        block = fh.read(4096)
        try:
            chunk = decoder.decode(block, final=not block)
        except UnicodeError:
            raise encoding_error(path, encoding) from None
        stripped = chunk.lstrip(_JSON_SPACE + "\ufeff")
        if stripped:
            return stripped[0]
        if not block:
            return None


_BLANK = object()
_BLOCK = 1 << 16  # bytes of lines read and parsed at a time: small enough to stay in the CPU cache


def line_blocks(path: str | Path) -> Iterator[tuple[int, list[bytes]]]:
    """``(number of the first line, lines)`` for each block of a file, lines
    as bytes with their newline. The first line comes alone, so a caller can
    look at it before the rest of the block is parsed."""
    with open(path, "rb", buffering=_BLOCK) as fh:
        lineno, lines = 1, [fh.readline()]
        while lines[0]:
            yield lineno, lines
            lineno += len(lines)
            lines = fh.readlines(_BLOCK) or [b""]  # the lines are found with memchr, in C


def text_line_blocks(path: str | Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """:func:`line_blocks` for encodings that are not ASCII-compatible
    (UTF-16, UTF-32): the file is decoded first, lines are text."""
    path = Path(path)
    try:
        # newline="\n": lines end at "\n" only, as in the byte reader, and keep it.
        with open(path, encoding=encoding, newline="\n") as fh:
            lineno, lines = 1, [fh.readline()]
            while lines[0]:
                yield lineno, lines
                lineno += len(lines)
                lines = fh.readlines(_BLOCK) or [""]
    except UnicodeError:
        raise encoding_error(path, encoding) from None


def parse_lines(path: Path, lineno: int, lines: list, encoding: str = "utf-8", fast=fast_loads
                ) -> tuple[list, UserError | None]:
    """The values of JSONL ``lines`` (bytes, or text from :func:`text_line_blocks`;
    blank lines skipped), and the error at the first malformed one (the values
    are those before it)."""
    values: list = []
    start = 0
    while start < len(lines):
        done = len(values)
        try:
            values.extend(map(fast, lines[start:]))  # the hot path: one C loop per block
            break
        except Exception:  # a blank line, a BOM, a big integer or an error: that line alone
            bad = start + len(values) - done  # extend kept the values before it
        try:
            value = _careful_line(path, lineno + bad, lines[bad], encoding)
        except UserError as err:
            return values, err
        if value is not _BLANK:
            values.append(value)
        start = bad + 1
    return values, None


def jsonl_batches(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, list]]:
    """``(index of the first record, records)`` of a JSONL file, a block at a time."""
    path = Path(path)
    if not ascii_compatible(encoding):
        blocks, fast = text_line_blocks(path, encoding), loads
    else:
        encoding = _byte_encoding(encoding)
        blocks = line_blocks(path)
        if encoding == "utf-8":
            fast = fast_loads
        else:
            def fast(raw: bytes, _encoding=encoding) -> Any:
                return loads(raw.decode(_encoding))
    index = 0
    for lineno, lines in blocks:
        exact = fast
        if fast is fast_loads and block_may_lose_digits(lines):
            exact = loads  # a long number somewhere in the block: the lines that hold one go to the stdlib
        values, err = parse_lines(path, lineno, lines, encoding, exact)
        if values:
            yield index, values
            index += len(values)
        if err is not None:
            raise err


def _iter_jsonl(path: Path, encoding: str, need_records: bool = False) -> Iterator[tuple[int, Any]]:
    found = False
    for index, values in jsonl_batches(path, encoding):
        found = True
        yield from enumerate(values, index)
    if need_records and not found:
        raise _no_records(path)


def is_jsonl(path: str | Path, encoding: str = "utf-8") -> bool:
    """True for a ``.jsonl`` file that really holds one value a line (not an array)."""
    path = Path(path)
    return path.suffix.lower() == ".jsonl" and _first_char(path, encoding) not in ("[", None)


def _nesting_error(path: Path, lineno: int | None = None) -> UserError:
    where = f"{path}:{lineno}" if lineno else str(path)
    return UserError(f"{where}: malformed JSON: nested too deeply for a record")


def _careful_line(path: Path, lineno: int, raw, encoding: str) -> Any:
    if isinstance(raw, str):  # a line of a UTF-16/UTF-32 file, decoded already
        text = raw[1:] if lineno == 1 and raw.startswith("\ufeff") else raw
        if not text.strip(_JSON_SPACE + "\x0b\x0c"):
            return _BLANK
        try:
            return loads(text)
        except ValueError as err:
            raise _text_error(path, lineno, text, err) from None
        except RecursionError:
            raise _nesting_error(path, lineno) from None
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[3:]
    if not raw or raw.isspace():
        return _BLANK
    try:
        return loads(raw.decode(encoding))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise _line_error(path, lineno, raw, encoding, err) from None
    except RecursionError:
        raise _nesting_error(path, lineno) from None


def _line_error(path: Path, lineno: int, raw: bytes, encoding: str, err: Exception) -> UserError:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as bad:
        return encoding_error(path, encoding, line=lineno, byte=raw[bad.start])
    return _text_error(path, lineno, text, err)


def _text_error(path: Path, lineno: int, text: str, err: Exception) -> UserError:
    try:
        std_loads(text)
    except json.JSONDecodeError as exact:
        return UserError(f"{path}:{lineno}:{exact.colno}: malformed JSON: {exact.msg}")
    except RecursionError:
        return _nesting_error(path, lineno)
    return UserError(f"{path}:{lineno}: malformed JSON: {show(err)}")


def encoding_error(path: Path, encoding: str, line: int | None = None, byte: int | None = None) -> UserError:
    """The one-line error for a file that is not in ``encoding``."""
    if line is None:
        line, byte = _find_undecodable(path, encoding)
    where = f"{path}:{line}" if line else str(path)
    got = f" (byte 0x{byte:02x})" if byte is not None else ""
    name = check_encoding(encoding)
    if name in ("utf-16", "utf-32") and not _starts_with_bom(path):
        return UserError(f"{where}: not valid {encoding} text; a file without a byte-order mark needs "
                         f"--encoding {name}-le or {name}-be, or re-save it as UTF-8")
    return UserError(
        f"{where}: not valid {encoding} text{got}; re-save it as UTF-8, or pass --encoding "
        "with the file's encoding (e.g. --encoding gb18030 for Chinese Windows files, utf-16 for Windows 'Unicode')"
    )


def _starts_with_bom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


def _find_undecodable(path: Path, encoding: str) -> tuple[int | None, int | None]:
    if not ascii_compatible(encoding):
        return _find_undecodable_text(path, encoding), None
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                start = max(err.start - (len(err.object) - len(block)), 0)  # the decoder may hold bytes back
                return line + block.count(b"\n", 0, start), block[min(start, len(block) - 1)]
            line += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            return line, None
    return None, None


def _find_undecodable_text(path: Path, encoding: str) -> int:
    """The line of the first undecodable character, counting decoded newlines
    (the last line when only the end of the file is cut short)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 16):
            state = decoder.getstate()
            try:
                line += decoder.decode(block).count("\n")
                continue
            except UnicodeError:
                decoder.setstate(state)
            for i in range(len(block)):  # again, a byte at a time, to find the line
                try:
                    line += decoder.decode(block[i:i + 1]).count("\n")
                except UnicodeError:
                    return line
    return line


_NON_WS = re.compile(r"[^ \t\r\n]")


class _Scanner:
    """Pull JSON values one at a time out of a text file read in chunks."""

    def __init__(self, fh, path: Path):
        self.fh, self.path = fh, path
        self.buf, self.pos, self.eof = "", 0, False
        self.base_line, self.base_col = 1, 0  # where buf[0] sits in the file
        self.chunk = 1 << 16
        self.decoder = json.JSONDecoder()
        self.started = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        if not data:
            self.eof = True
            return False
        if not self.started:  # a BOM the codec kept (utf-16-le, utf-32-be, ...) is not JSON
            self.started = True
            data = data[1:] if data.startswith("\ufeff") else data
        if self.pos > (1 << 20) or self.pos * 2 > len(self.buf):
            lines = self.buf.count("\n", 0, self.pos)
            if lines:
                self.base_line += lines
                self.base_col = self.pos - self.buf.rfind("\n", 0, self.pos) - 1
            else:
                self.base_col += self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += data
        return True

    def error(self, pos: int, message: str) -> UserError:
        lines = self.buf.count("\n", 0, pos)
        line = self.base_line + lines
        col = pos - self.buf.rfind("\n", 0, pos) if lines else self.base_col + pos + 1
        return UserError(f"{self.path}:{line}:{col}: malformed JSON: {message}")

    def peek(self) -> str | None:
        """The next non-whitespace character (not consumed); None at the end."""
        while True:
            m = _NON_WS.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return self.buf[self.pos]
            self.pos = len(self.buf)
            if not self._fill():
                return None

    def value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except RecursionError:
                raise self.error(self.pos, "nested too deeply for a record") from None
            except json.JSONDecodeError as err:
                # A value cut by the chunk boundary fails near the buffer's end
                # (or as an unterminated string): read on and retry.
                cut = err.pos >= len(self.buf) - 16 or err.msg.startswith("Unterminated string")
                if cut and self._fill():
                    self.chunk = min(self.chunk * 2, 1 << 24)
                    continue
                raise self.error(err.pos, err.msg) from None
            if end == len(self.buf) and self._fill():
                continue  # a number or literal may go on in the next chunk
            self.pos, self.chunk = end, 1 << 16
            return value


def _iter_json_text(path: Path, encoding: str, need_records: bool = False) -> Iterator[tuple[int, Any]]:
    enc = "utf-8-sig" if _byte_encoding(encoding) == "utf-8" else encoding
    empty = True
    try:
        with open(path, encoding=enc, newline="") as fh:
            for item in _scan(_Scanner(fh, path)):
                empty = False
                yield item
    except UnicodeError:
        raise encoding_error(path, encoding) from None
    if need_records and empty:
        raise _no_records(path)


def _scan(sc: _Scanner) -> Iterator[tuple[int, Any]]:
    char = sc.peek()
    index = 0
    if char != "[":
        while char is not None:  # JSONL content, one object, or concatenated values
            yield index, sc.value()
            index += 1
            char = sc.peek()
        return
    sc.pos += 1
    char = sc.peek()
    if char == "]":
        sc.pos += 1
    else:
        while True:
            if char is None:
                raise sc.error(sc.pos, "the file ends inside the array (missing ']')")
            yield index, sc.value()
            index += 1
            char = sc.peek()
            if char == ",":
                sc.pos += 1
                char = sc.peek()
            elif char == "]":
                sc.pos += 1
                break
            elif char is None:
                raise sc.error(sc.pos, "the file ends inside the array (missing ']')")
            else:
                raise sc.error(sc.pos, "expected ',' or ']' after an array element")
    if sc.peek() is not None:
        raise sc.error(sc.pos, "extra data after the closing ']'")


# ----------------------------------------------------------------- writing

def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in JSON_SUFFIXES:
        raise UserError(f"{path}: output must end in .jsonl (one record a line) or .json (an array)")
    return path


class Gather:
    """Writes to ``fh`` gathered into blocks of a MiB, which a background
    thread writes while the caller goes on converting (a write system call
    releases the GIL, and copying into the page cache costs about as much
    CPU as the JSON). Few large writes cost the kernel less than many small.

    Use as a context manager: on a clean exit everything is written; an
    error in the thread is raised in the caller at the next block or the end.
    """

    SIZE = 1 << 20  # larger blocks measured no faster, and cost memory

    def __init__(self, fh):
        self.fh = fh
        self._parts: list[bytes] = []
        self._size = 0
        self._queue = None
        self._thread = None
        self._error = None

    def __enter__(self) -> "Gather":
        return self

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.SIZE:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:  # small outputs never start one
            import queue
            import threading

            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._run, name="tianji-ft writer", daemon=True)
            self._thread.start()
        self._queue.join()  # one block at a time in the thread: memory stays the same however long the run
        self._queue.put(self._parts)
        self._parts, self._size = [], 0

    def _run(self) -> None:
        while (parts := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self.fh, parts)
                except BaseException as err:  # raised again in the caller
                    self._error = err
                parts.clear()
            self._queue.task_done()

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if exc[0] is None:
            if self._error is not None:
                raise self._error
            _write_all(self.fh, self._parts)
        self._parts = []
        return False


def _write_all(fh, parts: list[bytes]) -> None:
    """``parts`` into ``fh``, in one system call and without a joined copy where the platform allows."""
    if 1 < len(parts) <= 1024 and hasattr(os, "writev"):  # 1024: IOV_MAX on Linux
        fh.flush()
        done = os.writev(fh.fileno(), parts)
        if done == sum(map(len, parts)):
            return
        parts = [b"".join(parts)[done:]]  # a short write: the rest the usual way
    fh.write(b"".join(parts))


class RecordWriter:
    """Write records to ``.jsonl`` (one a line) or ``.json`` (an array, one
    record a line), atomically: the file appears complete or not at all.

    Use as a context manager; an exception inside leaves ``path`` untouched.
    :meth:`finish` writes everything out (so a full disk shows before any
    file of a set is renamed into place); :meth:`discard` drops the output.
    """

    _BATCH = 256  # lines joined at a time: a write call per line costs more than the JSON

    def __init__(self, path: str | Path):
        self.path = check_output_path(path)
        self.array = self.path.suffix.lower() == ".json"
        self._ctx = atomic_open(self.path, "wb")
        self._out = None
        self._fh = None
        self._pending: list[bytes] = []
        self._flushed = 0
        self._finished = False
        self._discarded = False

    @property
    def count(self) -> int:
        """Records written so far."""
        return self._flushed + len(self._pending)

    def __enter__(self) -> "RecordWriter":
        self._fh = self._ctx.__enter__()
        self._out = Gather(self._fh)
        if self.array:
            self._out.write(b"[")
        else:
            self.write = self._line_writer()  # the hot path: no per-record branching
        return self

    def _line_writer(self):
        pending, add, batch = self._pending, self._pending.append, self._BATCH

        def write(record: Any) -> None:
            add(dumps_line(record))
            if len(pending) >= batch:
                self._flush()

        return write

    def _flush(self) -> None:
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._flushed += len(self._pending)
            self._pending.clear()

    def write_many(self, records: list) -> None:
        """Write ``records`` in order (for JSONL, serialised in one C loop)."""
        if not records:
            return
        if self.array:
            self._out.write((b",\n" if self._flushed else b"\n") + b",\n".join(map(dumps, records)))
        else:
            self._flush()
            self._out.write(dumps_lines(records))
        self._flushed += len(records)

    def write(self, record: Any) -> None:
        self._out.write((b",\n" if self._flushed else b"\n") + dumps(record))
        self._flushed += 1

    def finish(self) -> None:
        """Write all records out to the temporary file and sync it; the rename waits for the exit."""
        if self._finished:
            return
        self._flush()
        if self.array:
            self._out.write(b"\n]\n" if self.count else b"]\n")
        self._out.__exit__(None, None, None)
        self._finished = True
        if not self._discarded:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def discard(self) -> None:
        """Write nothing: at the exit the temporary file goes, and so does an
        earlier ``path`` (so no stale output outlives a run that kept nothing)."""
        self._discarded = True

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            try:
                self.finish()
            except BaseException as err:  # e.g. a full disk: the file is not replaced
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
            if self._discarded:
                self._ctx.__exit__(_Discarded, _Discarded(), None)  # removes the temporary file
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                return False
        elif not self._finished:
            self._out.__exit__(*exc)
        return bool(self._ctx.__exit__(*exc))


class _Discarded(Exception):
    """Thrown into an atomic write to drop it."""


def write_records(path: str | Path, records) -> int:
    """Write an iterable of records to ``path``; return how many."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count
