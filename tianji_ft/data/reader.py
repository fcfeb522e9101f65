"""Readers of ``.json`` / ``.jsonl`` record files, streaming.

JSONL is read a block of lines at a time, JSON arrays element by element
(the array is never held whole), so memory stays flat however large the
file. Files in an encoding that is not ASCII-compatible (UTF-16, UTF-32) are
decoded as text line by line instead of split on ``b"\\n"`` bytes. Every
problem is one :class:`UserError` naming the file, line and column.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterator

from tianji_ft.core.jsonfast import block_may_lose_digits, fast_loads, loads, std_loads
from tianji_ft.core.errors import UserError
from tianji_ft.data.schema import show

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
