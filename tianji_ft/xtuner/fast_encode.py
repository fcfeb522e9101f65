"""XTuner's training dataset, built at the tokenizer's speed and token for token as XTuner builds it.

:func:`build_to_disk` does what ``xtuner.dataset.huggingface.process`` does under
``np.random.seed(seed)`` (as :func:`tianji_ft.xtuner.dataset_cache.build` runs it),
and writes the result as a ``datasets`` save:

- Records: the dataset map fn and the template map fn are XTuner's own
  functions, applied row by row; the tokenization is XTuner's ``encode_fn``
  (bos where a turn needs one, the input without loss, the output with or
  without loss, ``need_eos_token``, ``sep``, truncation to ``max_length``, the
  filters on empty conversations and on records without a label), except that
  the texts of many records go to the fast tokenizer's backend in one call and
  the ids are assembled with NumPy. A sample of records is checked against
  ``encode_fn`` itself before the build goes on.
- Order: the shuffle draws from NumPy's global generator exactly as
  ``Dataset.shuffle()`` does, and packing reproduces XTuner's ``Packer`` run by
  ``datasets.map(batched=True, num_proc=map_num_proc)``: contiguous shards, a
  fresh packer per shard, batches of 1000 rows, the residual at the end of a
  shard dropped, ``use_varlen_attn``'s cumulative lengths and position ids from
  the packer's own code. The rows are the ones XTuner's path packs.
- Memory: raw rows are read from the Arrow files batch by batch, token ids go to
  a flat file on disk, and the packed rows are gathered from it block by block
  with plain reads and written to the Arrow file; what grows with the record
  count is an index of about 30 bytes per record (lengths, offsets, the
  permutation).
- Processes: as many as the machine has cores, never more than
  ``os.cpu_count()`` nor ``map_num_proc``.

Whatever it does not cover raises :class:`Unsupported`, saying why, before
anything is saved; the caller then runs XTuner's own ``process``.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict
from itertools import chain
from pathlib import Path

from tianji_ft.core.errors import UserError

# process()'s own defaults (xtuner/dataset/huggingface.py).
PROCESS_DEFAULTS = dict(
    do_dataset_tokenization=True, tokenizer=None, max_length=None, dataset_map_fn=None, template_map_fn=None,
    max_dataset_length=None, split="train", remove_unused_columns=False, rename_maps=(),
    shuffle_before_pack=True, pack_to_max_length=True, use_varlen_attn=False, input_ids_with_output=True,
    with_image_token=False, map_num_proc=32,
)
# Dataset map fns whose output it knows (a conversation of turns with fixed keys).
KNOWN_MAP_FNS = ("msagent_react_map_fn", "oasst1_map_fn")
# Tokenizer methods on the way from ``encode`` to the backend; a class that
# overrides one may tokenize differently, so it is not covered.
ENCODE_PATH = ("encode", "encode_plus", "batch_encode_plus", "_encode_plus", "_batch_encode_plus", "__call__",
               "_call_one", "tokenize", "prepare_for_tokenization", "set_truncation_and_padding")
PROGRESS_EVERY_S = 10.0    # how often a long build logs how far it is
PACK_BATCH = 1000          # datasets.map's default batch_size, which XTuner's packing map runs with
READ_ROWS = 512            # raw rows per backend call
ROWS_PER_PROCESS = 4096    # a fork is not worth it for fewer rows than this
BLOCK_TOKENS = 1 << 19     # tokens per written Arrow batch
SELF_CHECK_ROWS = 64       # raw rows checked against XTuner's encode_fn before the build
MEMO_TOKENS = 1 << 19      # token ids of repeated prompts kept per process
DATA_FILE = "data-00000-of-00001.arrow"


class Unsupported(Exception):
    """The fast build does not cover these arguments; ``str()`` says why."""


def no_sample_left(max_length) -> UserError:
    return UserError(
        f"no training sample left after tokenizing with max_length={max_length}: "
        "every record has an empty answer or one that starts beyond max_length; raise max_length "
        "(TIANJI_MAX_LENGTH) or check the data")


# ------------------------------------------------------------ what it covers

def _options(process_kwargs: dict) -> dict:
    unknown = sorted(set(process_kwargs) - set(PROCESS_DEFAULTS) - {"dataset"})
    if unknown:
        raise Unsupported(f"option {', '.join(unknown)} is not one of process_hf_dataset's it handles")
    opts = {**PROCESS_DEFAULTS, **process_kwargs}
    if not opts["do_dataset_tokenization"]:
        raise Unsupported("do_dataset_tokenization=False")
    if not opts["input_ids_with_output"]:
        raise Unsupported("input_ids_with_output=False")
    if opts["with_image_token"]:
        raise Unsupported("with_image_token=True")
    if opts["rename_maps"]:
        raise Unsupported("rename_maps")
    if not opts["pack_to_max_length"] and not opts["remove_unused_columns"]:
        raise Unsupported("pack_to_max_length=False with remove_unused_columns=False keeps the raw columns")
    if opts["use_varlen_attn"] and not opts["pack_to_max_length"]:
        raise Unsupported("use_varlen_attn without pack_to_max_length")
    if opts["pack_to_max_length"] and opts["split"] not in ("train", None):
        raise Unsupported(f"split={opts['split']!r} with pack_to_max_length")
    max_length = opts["max_length"]
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise Unsupported(f"max_length={max_length!r}")
    num_proc = opts["map_num_proc"]
    if num_proc is not None and (isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1):
        raise Unsupported(f"map_num_proc={num_proc!r}")
    mdl = opts["max_dataset_length"]
    if mdl is not None and (isinstance(mdl, bool) or not isinstance(mdl, int)):
        raise Unsupported(f"max_dataset_length={mdl!r}")
    return opts


def _is_config(obj) -> bool:
    from mmengine.config import Config, ConfigDict

    return isinstance(obj, (dict, Config, ConfigDict))


def _dataset_map_fn(fn):
    """The dataset map fn as XTuner's ``map_dataset`` resolves it, if it is one this module knows."""
    if fn is None:
        return None
    import xtuner.dataset.map_fns as map_fns

    if isinstance(fn, str):
        from mmengine.utils.misc import get_object_from_string
        from xtuner.registry import MAP_FUNC

        fn = MAP_FUNC.get(fn) or get_object_from_string(fn)
    if not any(fn is getattr(map_fns, name, None) for name in KNOWN_MAP_FNS):
        name = getattr(fn, "__qualname__", type(fn).__qualname__)
        raise Unsupported(f"dataset_map_fn {name} is not one it knows ({', '.join(KNOWN_MAP_FNS)})")
    return fn


def _template_map_fn(cfg):
    if cfg is None:
        return None
    from xtuner.dataset.map_fns.template_map_fn import template_map_fn
    from xtuner.registry import BUILDER

    fn = BUILDER.build(cfg) if _is_config(cfg) else cfg
    if not (isinstance(fn, functools.partial) and fn.func is template_map_fn and not fn.args
            and set(fn.keywords) == {"template"}):
        raise Unsupported(f"template_map_fn {fn!r} is not XTuner's template_map_fn_factory")
    template = fn.keywords["template"]
    if not (hasattr(template, "items") and all(isinstance(k, str) for k in template.keys())):
        raise Unsupported(f"template {template!r} is not a mapping")
    # The same function on a plain copy of the template: mmengine's ConfigDict
    # attribute lookups cost a sixth of the whole encoding time.
    return functools.partial(template_map_fn, template=_Template(template.items()))


class _Template(dict):
    """A prompt template as a plain dict read by attribute, as template_map_fn reads a ConfigDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _fast_tokenizer(cfg):
    from transformers import PreTrainedTokenizerFast
    from xtuner.registry import BUILDER

    tokenizer = BUILDER.build(cfg) if _is_config(cfg) else cfg
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise Unsupported(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer")
    for cls in type(tokenizer).__mro__:
        if cls.__module__.startswith("transformers.tokenization_utils") or cls is object:
            continue
        overridden = [name for name in ENCODE_PATH if name in cls.__dict__]
        if overridden:
            raise Unsupported(f"tokenizer class {cls.__name__} overrides {', '.join(overridden)}")
    return tokenizer


def _cores() -> int:
    count = os.cpu_count() or 1
    try:
        count = min(count, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        pass
    return max(1, count)


# ------------------------------------------------------------ reading rows

class _Source:
    """The rows of the origin dataset, read in batches of Python dicts.

    A dataset straight from ``load_dataset`` is read from its Arrow files
    through ordinary reads, so the pages do not stay mapped in this process;
    any other is read through the datasets API.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.rows = len(dataset)
        if any(getattr(dataset.features, "_column_requires_decoding", {}).values()):
            raise Unsupported("a column needs decoding (images, audio)")
        self.files = _stream_files(dataset)

    def batches(self, lo: int, hi: int, size: int):
        if self.files is None:
            table = self.dataset.with_format("arrow")
            for start in range(lo, hi, size):
                yield table[start:min(start + size, hi)].to_pylist()
            return
        import pyarrow as pa

        base = 0
        for path, rows in self.files:
            if base + rows <= lo:
                base += rows
                continue
            if base >= hi:
                break
            pos = base
            with pa.OSFile(path, "rb") as fh:
                for batch in pa.ipc.open_stream(fh):
                    start, pos = pos, pos + batch.num_rows
                    if pos <= lo:
                        continue
                    if start >= hi:
                        break
                    part = batch.slice(max(lo, start) - start, min(hi, pos) - max(lo, start))
                    for i in range(0, part.num_rows, size):
                        yield part.slice(i, size).to_pylist()
            base += rows


def _stream_files(dataset):
    """[(arrow file, rows)] when the dataset is exactly its cache files in order, else None."""
    from datasets.table import ConcatenationTable, MemoryMappedTable

    if dataset._indices is not None:
        return None
    table = dataset._data
    if isinstance(table, MemoryMappedTable):
        tables = [table]
    elif isinstance(table, ConcatenationTable) and all(
            len(row) == 1 and isinstance(row[0], MemoryMappedTable) for row in table.blocks):
        tables = [row[0] for row in table.blocks]
    else:
        return None
    # datasets records setting its features metadata as a replay; that one does not change the rows.
    if any(op[0] != "replace_schema_metadata" for t in tables for op in t.replays):
        return None
    if any(not t.schema.equals(table.schema) for t in tables):
        return None
    return [(t.path, len(t)) for t in tables]


# ------------------------------------------------------------ encoding

class _Encoder:
    """Conversations -> (input_ids, label flags, lengths) as XTuner's ``encode_fn`` makes them.

    A label is the input id where the flag is set, ``IGNORE_INDEX`` elsewhere:
    ``encode_fn`` only ever copies ids into labels or masks them.
    """

    BOS, EOS = -1, -2

    def __init__(self, tokenizer, max_length: int, map_fn, template_fn):
        import numpy as np
        from xtuner.dataset.utils import get_bos_eos_token_ids

        bos, eos = get_bos_eos_token_ids(tokenizer)
        if bos is None or eos is None:
            raise Unsupported(f"tokenizer {type(tokenizer).__name__} has no {'bos' if bos is None else 'eos'} token")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.map_fn, self.template_fn = map_fn, template_fn
        backend = tokenizer.backend_tokenizer
        # As PreTrainedTokenizerFast.encode() leaves the backend: no truncation,
        # no padding, special tokens split or not as the tokenizer says.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        if backend.encode_special_tokens != bool(tokenizer.split_special_tokens):
            backend.encode_special_tokens = bool(tokenizer.split_special_tokens)
        self.backend = backend
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
        self.consts = [list(bos), list(eos)]  # code -1 - i
        self.sep_codes: dict = {}
        self.memo: dict = {}
        self.memo_tokens = 0
        self.np = np

    def conversations(self, rows: list) -> list:
        """Rows -> conversations, through the map fns and the empty-conversation filter."""
        out = []
        for row in rows:
            if self.map_fn is not None:
                row = {**row, **self.map_fn(row)}  # datasets.map merges the returned columns into the row
            if self.template_fn is not None:
                row = {**row, **self.template_fn(row)}
                if not len(row["conversation"]) > 0:  # add_template_to_dataset's filter
                    continue
            out.append(row["conversation"])
        return out

    def _ids(self, texts: list, inputs: list) -> list:
        """Token ids of each text, as ``tokenizer.encode(text, add_special_tokens=False)`` gives them.

        Texts go to the backend in one call; the ids of turn inputs are kept
        (up to MEMO_TOKENS tokens, then forgotten all at once) for the next
        batches, where the same prompts come back.
        """
        memo = self.memo
        missing = [t for t in texts if t not in memo] if memo else texts
        encoded = iter([e.ids for e in self._encode_batch(missing, add_special_tokens=False)] if missing else ())
        if memo:
            id_lists = []
            for text in texts:
                ids = memo.get(text)
                id_lists.append(next(encoded) if ids is None else ids)
        else:
            id_lists = list(encoded)
        for i in inputs:
            text = texts[i]
            if text not in memo:
                if self.memo_tokens + len(id_lists[i]) > MEMO_TOKENS:
                    memo.clear()
                    self.memo_tokens = 0
                memo[text] = id_lists[i]
                self.memo_tokens += len(id_lists[i])
        return id_lists

    def _sep_code(self, sep) -> int:
        code = self.sep_codes.get(sep)
        if code is None:
            ids = self.backend.encode(_text(sep), add_special_tokens=False).ids
            self.consts.append(list(ids))
            code = self.sep_codes[sep] = -len(self.consts)
        return code

    def encode(self, conversations: list):
        """(ids int32, flags uint8, lengths int64) of the records that keep a label, in order."""
        np = self.np
        texts: list = []   # distinct texts of this batch
        index: dict = {}   # text -> its place in texts
        inputs: list = []  # places of the turn inputs (prompts repeat: system prompt, instructions)
        src: list = []     # per piece: place in texts, or a negative constant code
        flag: list = []    # per piece: 1 where its tokens carry loss
        pieces: list = []  # per record: number of pieces
        for conversation in conversations:
            count = len(src)
            next_needs_bos = True
            for turn in conversation:
                if next_needs_bos:
                    src.append(self.BOS)
                    flag.append(0)
                text = turn.get("input")
                if text.__class__ is not str:
                    _text(text)
                i = index.get(text)
                if i is None:
                    i = index[text] = len(texts)
                    texts.append(text)
                    inputs.append(i)
                src.append(i)
                flag.append(0)
                with_loss = 1 if turn.get("output_with_loss", True) else 0
                text = turn.get("output")
                if text.__class__ is not str:
                    _text(text)
                i = index.get(text)
                if i is None:
                    i = index[text] = len(texts)
                    texts.append(text)
                src.append(i)
                flag.append(with_loss)
                if turn.get("need_eos_token", True):
                    next_needs_bos = True
                    src.append(self.EOS)
                    flag.append(with_loss)
                else:
                    next_needs_bos = False
                sep = turn.get("sep", "")
                if sep != "":
                    src.append(self._sep_code(sep))
                    flag.append(0)
            pieces.append(len(src) - count)
        id_lists = self._ids(texts, inputs)
        id_lists += self.consts
        lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        flat = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lens.sum()))
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        src_a = np.asarray(src, dtype=np.int64)
        src_a = np.where(src_a >= 0, src_a, len(texts) - 1 - src_a)  # constants follow the texts
        piece_len = lens[src_a]
        tokens = int(piece_len.sum())
        piece_out = np.zeros(len(src_a), dtype=np.int64)
        np.cumsum(piece_len[:-1], out=piece_out[1:])
        gather = np.repeat(starts[src_a] - piece_out, piece_len) + np.arange(tokens, dtype=np.int64)
        tok_flag = np.repeat(np.asarray(flag, dtype=np.uint8), piece_len)
        # Records: full length, then truncation to max_length.
        piece_bounds = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(pieces, out=piece_bounds[1:])
        piece_cum = np.zeros(len(src_a) + 1, dtype=np.int64)
        np.cumsum(piece_len, out=piece_cum[1:])
        rec_start = piece_cum[piece_bounds[:-1]]
        rec_full = piece_cum[piece_bounds[1:]] - rec_start
        keep = (np.arange(tokens, dtype=np.int64) - np.repeat(rec_start, rec_full)) < self.max_length
        ids = flat[gather[keep]]
        tok_flag = tok_flag[keep]
        rec_len = np.minimum(rec_full, self.max_length)
        # process()'s filter: a record needs at least one label >= 0.
        flag_cum = np.zeros(len(tok_flag) + 1, dtype=np.int64)
        np.cumsum(tok_flag, out=flag_cum[1:])
        rec_bounds = np.zeros(len(rec_len) + 1, dtype=np.int64)
        np.cumsum(rec_len, out=rec_bounds[1:])
        has_label = flag_cum[rec_bounds[1:]] > flag_cum[rec_bounds[:-1]]
        if not has_label.all():
            tok_keep = np.repeat(has_label, rec_len)
            ids, tok_flag, rec_len = ids[tok_keep], tok_flag[tok_keep], rec_len[has_label]
        return ids.astype(np.int32), tok_flag, rec_len


def _text(value) -> str:
    if not isinstance(value, str):
        raise Unsupported(f"a turn holds {type(value).__name__} where encode_fn expects text")
    return value


def encode_tokens(ids, flags):
    """One uint32 per token: the id, and the label flag in the top bit (ids are below 2**31)."""
    import numpy as np

    if ids.size and int(ids.max()) >= 1 << 31:
        raise Unsupported("a token id at or above 2**31")
    return ids.astype(np.uint32) | (flags.astype(np.uint32) << 31)


def decode_tokens(tokens):
    """(input_ids int32, label flags uint8) of :func:`encode_tokens`' words."""
    import numpy as np

    return (tokens & 0x7FFFFFFF).astype(np.int32), (tokens >> 31).astype(np.uint8)


def _self_check(encoder: _Encoder, source: _Source) -> None:
    """Compare the first records with XTuner's ``encode_fn`` itself; a difference means XTuner's path."""
    import copy

    import numpy as np
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import IGNORE_INDEX

    rows = next(source.batches(0, min(source.rows, SELF_CHECK_ROWS), SELF_CHECK_ROWS), [])
    conversations = encoder.conversations(rows)
    expected = []
    for conversation in copy.deepcopy(conversations):
        out = encode_fn({"conversation": conversation}, encoder.tokenizer, encoder.max_length,
                        input_ids_with_output=True, with_image_token=False)
        if any(label >= 0 for label in out["labels"]):
            expected.append((out["input_ids"], out["labels"]))
    ids, flags, lens = encoder.encode(conversations)
    got, pos = [], 0
    for n in lens.tolist():
        i, f = ids[pos:pos + n], flags[pos:pos + n]
        got.append((i.tolist(), np.where(f > 0, i, IGNORE_INDEX).tolist()))
        pos += n
    if got != expected:
        which = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise Unsupported(f"batch encoding differs from XTuner's encode_fn on sample record {which}")


_FORKED: tuple | None = None  # (encoder, source) for forked workers


def _encode_part(lo: int, hi: int, prefix: str, part: str) -> dict:
    encoder, source = _FORKED
    return _encode_range(encoder, source, lo, hi, prefix, part)


def _encode_range(encoder: _Encoder, source: _Source, lo: int, hi: int, prefix: str, part: str = "") -> dict:
    stats = dict(rows=hi - lo, conversations=0, records=0, tokens=0)
    start = last = time.monotonic()
    done = 0
    with open(prefix + ".tok", "wb") as f_tok, open(prefix + ".len", "wb") as f_len:
        for rows in source.batches(lo, hi, READ_ROWS):
            conversations = encoder.conversations(rows)
            ids, flags, lens = encoder.encode(conversations)
            encode_tokens(ids, flags).tofile(f_tok)
            lens.tofile(f_len)
            stats["conversations"] += len(conversations)
            stats["records"] += len(lens)
            stats["tokens"] += len(ids)
            done += len(rows)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:  # a long build says how far it is, in the run's log
                last = now
                _log(f"dataset preparation{part}: {done:,}/{hi - lo:,} rows ({100 * done / (hi - lo):.0f}%), "
                     f"{done / (now - start):,.0f} rows/s, {stats['tokens']:,} tokens")
    return stats


def _log(message: str) -> None:
    from mmengine.logging import print_log

    print_log(message, logger="current")


def _encode_all(encoder: _Encoder, source: _Source, work: Path, map_num_proc) -> list[dict]:
    """Encode every row into ``work/tokens.{tok,len}``; one summary per process's range of rows."""
    global _FORKED
    n = source.rows
    procs = max(1, min(_cores(), map_num_proc or 1, math.ceil(n / ROWS_PER_PROCESS)))
    if procs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        procs = 1  # the workers share the tokenizer and the dataset by forking
    bounds = [n * i // procs for i in range(procs + 1)]
    prefixes = [str(work / f"part{i}") for i in range(procs)]
    if procs == 1:
        results = [_encode_range(encoder, source, 0, n, prefixes[0])]
    else:
        before = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process, as datasets.map sets it
        _FORKED = (encoder, source)
        try:
            with multiprocessing.get_context("fork").Pool(procs) as pool:
                results = pool.starmap(_encode_part, [(bounds[i], bounds[i + 1], prefixes[i], f" (part {i + 1}/{procs})")
                                                      for i in range(procs)])
        finally:
            _FORKED = None
            if before is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = before
    for ext in (".tok", ".len"):
        _concat([p + ext for p in prefixes], work / ("tokens" + ext))
    return [dict(r, lo=bounds[i], hi=bounds[i + 1]) for i, r in enumerate(results)]


def _concat(parts: list, dest: Path) -> None:
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                copied = 0
                try:
                    while copied < size:
                        n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
                        if n == 0:
                            break
                        copied += n
                except (AttributeError, OSError):
                    src.seek(copied)
                    out.seek(0, os.SEEK_END)
                    shutil.copyfileobj(src, out, 1 << 22)
                    copied = size
            os.unlink(part)


# ------------------------------------------------------------ shuffle and pack

def xtuner_shuffle_permutation(n: int):
    """The permutation ``Dataset.shuffle()`` without a seed draws, consuming NumPy's global state as it does."""
    import numpy as np

    _, keys, pos, *_ = np.random.get_state()
    seed = keys[pos] if pos < 624 else keys[0]
    _ = np.random.random()  # datasets does one step of the global generator
    return np.random.default_rng(seed).permutation(n)


def shard_bounds(n: int, map_num_proc) -> list[int]:
    """Row bounds of the contiguous shards ``datasets.map(num_proc=map_num_proc)`` processes."""
    num_proc = map_num_proc
    if num_proc is not None and num_proc > n:
        num_proc = n
    shards = 1 if num_proc is None or num_proc <= 1 else num_proc
    div, mod = divmod(n, shards)
    return [div * i + min(i, mod) for i in range(shards)] + [n]


def pack_rows(lens, max_length: int, bounds: list, varlen: bool):
    """Packed rows as (start, length) in the stream of records in packing order, as XTuner's Packer cuts it.

    Each shard runs a fresh ``Packer`` over batches of ``PACK_BATCH`` rows: a
    batch whose tokens, with the residual, reach ``max_length`` gives full
    rows and a new residual; a batch that does not gives one short row; the
    residual left at the end of a shard is dropped. With ``varlen``, also the
    rows' ``cumulative_len`` lists (from the packer's own method), as flat
    values and offsets.
    """
    import numpy as np

    starts, lengths, cum_values, cum_counts = [], [], [], []
    stream = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=stream[1:])
    chunk = max_length
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pos, residual = int(stream[lo]), 0
        packer = None
        if varlen:
            from xtuner.dataset.utils import Packer

            packer = Packer(chunk, use_varlen_attn=True)
        for b in range(lo, hi, PACK_BATCH):
            e = min(b + PACK_BATCH, hi)
            total = residual + int(stream[e] - stream[b])
            if packer is not None:
                cum = packer.residual_cumulative_len
                for n in lens[b:e].tolist():
                    cum.append(cum[-1] + n)
            if total >= chunk:
                k = total // chunk
                starts.append(np.arange(pos, pos + k * chunk, chunk, dtype=np.int64))
                lengths.append(np.full(k, chunk, dtype=np.int64))
                pos += k * chunk
                residual = total - k * chunk
                if packer is not None:
                    rows = packer.get_cumulative_len(k)
            else:
                starts.append(np.array([pos], dtype=np.int64))
                lengths.append(np.array([total], dtype=np.int64))
                pos += total
                residual = 0
                if packer is not None:
                    rows = [packer.residual_cumulative_len]
                    packer.residual_cumulative_len = [0]
            if packer is not None:
                for row in rows:
                    cum_values.append(np.asarray(row, dtype=np.int64))
                    cum_counts.append(len(row))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    if not varlen:
        return cat(starts), cat(lengths), None
    return cat(starts), cat(lengths), (cat(cum_values), np.asarray(cum_counts, dtype=np.int64))


# ------------------------------------------------------------ writing

def _features(varlen: bool):
    from datasets import Features, Sequence, Value

    # datasets stores input_ids as int32 (its OptimizedTypedSequence), labels as int64.
    columns = {"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int64"))}
    if varlen:
        columns.update(cumulative_len=Sequence(Value("int64")), position_ids=Sequence(Value("int64")))
    columns["length"] = Value("int64")
    return Features(columns)


class _Tokens:
    """The encoded records on disk, read with pread into each block's buffer.

    Not memory-mapped: a shuffled gather touches records all over the file,
    and the kernel maps the pages around every touched one, so a mapping's
    resident size grows with the file even when the pages are released after
    each block.
    """

    def __init__(self, work: Path):
        self._fh = open(work / "tokens.tok", "rb")

    def gather(self, starts, lens):
        """The words of the runs (start, length), in order, in one array."""
        import numpy as np

        if len(starts) > 1:  # runs that continue on disk are one read
            first = np.concatenate([[0], np.flatnonzero(starts[1:] != starts[:-1] + lens[:-1]) + 1])
            starts, lens = starts[first], np.add.reduceat(lens, first)
        out = np.empty(int(lens.sum()), dtype=np.uint32)
        view = memoryview(out).cast("B")
        fd, pos = self._fh.fileno(), 0
        for start, n in zip((starts * 4).tolist(), (lens * 4).tolist()):
            done = 0
            while done < n:
                got = os.preadv(fd, [view[pos + done:pos + n]], start + done)
                if got <= 0:
                    raise OSError(f"short read from {self._fh.name}")
                done += got
            pos += n
        return out

    def close(self) -> None:
        self._fh.close()


def _write_rows(path: Path, features, tokens: _Tokens, src_start, order, rows, varlen_cum) -> int:
    """Write the rows (start, length in the stream of records taken in ``order``) as an Arrow file."""
    import numpy as np
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from xtuner.utils import IGNORE_INDEX

    row_start, row_len = rows
    order_lens = np.diff(src_start)[order]
    stream = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(order_lens, out=stream[1:])
    del order_lens
    if varlen_cum is not None:
        cum_values, cum_counts = varlen_cum
        cum_off = np.zeros(len(cum_counts) + 1, dtype=np.int64)
        np.cumsum(cum_counts, out=cum_off[1:])
    schema = features.arrow_schema
    writer = ArrowWriter(features=features, path=str(path))
    try:
        r = 0
        n_rows = len(row_start)
        row_cum = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(row_len, out=row_cum[1:])
        while r < n_rows:
            e = int(np.searchsorted(row_cum, row_cum[r] + BLOCK_TOKENS, side="left"))
            e = min(max(e, r + 1), n_rows)
            starts, lens = row_start[r:e], row_len[r:e]
            total = int(lens.sum())
            # The records under these rows' stretch of the stream, and where each part of it lies on disk.
            lo, hi = int(starts[0]), int(starts[-1] + lens[-1])
            j0 = int(np.searchsorted(stream, lo, side="right")) - 1
            j1 = int(np.searchsorted(stream, hi, side="left"))
            seg_lo = np.maximum(stream[j0:j1], lo)
            seg_len = np.minimum(stream[j0 + 1:j1 + 1], hi) - seg_lo
            words = tokens.gather(src_start[order[j0:j1]] + (seg_lo - stream[j0:j1]), seg_len)
            del seg_lo, seg_len
            out_off = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=out_off[1:])
            if total != hi - lo:  # a shard's dropped residual lies between two rows
                words = words[np.repeat(starts - lo - out_off[:-1], lens) + np.arange(total, dtype=np.int64)]
            ids, flags = decode_tokens(words)
            labels = np.where(flags > 0, ids, IGNORE_INDEX).astype(np.int64)
            del words, flags
            offsets = pa.array(out_off.astype(np.int32))  # a block holds about BLOCK_TOKENS tokens
            columns = [pa.ListArray.from_arrays(offsets, pa.array(ids)),
                       pa.ListArray.from_arrays(offsets, pa.array(labels))]
            if varlen_cum is not None:
                lo_, hi_ = int(cum_off[r]), int(cum_off[e])
                values = cum_values[lo_:hi_]
                c_off = (cum_off[r:e + 1] - lo_).astype(np.int32)
                columns.append(pa.ListArray.from_arrays(pa.array(c_off), pa.array(values)))
                positions = _position_ids(values, cum_counts[r:e])
                columns.append(pa.ListArray.from_arrays(offsets, pa.array(positions)))
            columns.append(pa.array(lens, type=pa.int64()))
            table = pa.Table.from_arrays(columns, names=schema.names)
            writer.write_table(table)
            del ids, labels, columns, table
            r = e
        writer.finalize()
    finally:
        writer.close()
    return len(row_start)


def _position_ids(cum_values, cum_counts):
    """Packer.get_position_ids for a run of rows: 0.. within each segment of each row's cumulative_len."""
    import numpy as np

    out = []
    pos = 0
    for count in cum_counts.tolist():
        cl = cum_values[pos:pos + count]
        pos += count
        seg = np.diff(cl)
        total = int(seg.sum())
        seg_start = np.zeros(len(seg), dtype=np.int64)
        np.cumsum(seg[:-1], out=seg_start[1:])
        out.append(np.arange(total, dtype=np.int64) - np.repeat(seg_start, seg))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _write_state(directory: Path, features, fingerprint: str, split) -> None:
    """The two files ``Dataset.save_to_disk`` writes beside the data, for ``load_from_disk``."""
    from datasets import DatasetInfo

    state = {"_data_files": [{"filename": DATA_FILE}], "_fingerprint": fingerprint, "_format_columns": None,
             "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": str(split) if split is not None else None}
    (directory / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    info = asdict(DatasetInfo(features=features))
    (directory / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                 encoding="utf-8")


# ------------------------------------------------------------ the build

class Encoded:
    """The encoding stage's result: token files in ``work`` and what produced them."""

    def __init__(self, opts, encoder, source, parts, work, rng_state, split):
        self.opts, self.encoder, self.source, self.parts = opts, encoder, source, parts
        self.work, self.rng_state, self.split = work, rng_state, split

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    def lengths(self):
        import numpy as np

        return np.fromfile(self.work / "tokens.len", dtype=np.int64)

    def token_words(self):
        """The token file, memory-mapped (uint32 words: decode with :func:`decode_tokens`)."""
        import numpy as np

        return np.memmap(self.work / "tokens.tok", dtype=np.uint32, mode="r")


def encode_records(process_kwargs: dict, seed: int, work: Path) -> Encoded:
    """The first stage of :func:`build_to_disk`: every record's tokens into ``work``, in dataset order.

    ``work/tokens.tok`` holds the kept records one after another, a uint32
    per token (see :func:`encode_tokens`), ``work/tokens.len`` (int64) their
    lengths. Raises :class:`Unsupported`.
    """
    import numpy as np
    from xtuner.dataset.huggingface import build_origin_dataset

    opts = _options(process_kwargs)
    map_fn = _dataset_map_fn(opts["dataset_map_fn"])
    template_fn = _template_map_fn(opts["template_map_fn"])
    tokenizer = _fast_tokenizer(opts["tokenizer"])
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        dataset = build_origin_dataset(opts["dataset"], opts["split"])
        if opts["max_dataset_length"] is not None:
            count = min(opts["max_dataset_length"], len(dataset))
            dataset = dataset.select(np.random.choice(len(dataset), count, replace=False))
        source = _Source(dataset)
        encoder = _Encoder(tokenizer, opts["max_length"], map_fn, template_fn)
        _self_check(encoder, source)
        parts = _encode_all(encoder, source, work, opts["map_num_proc"])
        rng_state = np.random.get_state()  # where XTuner's shuffle would draw from
    finally:
        np.random.set_state(state)
    return Encoded(opts, encoder, source, parts, work, rng_state, getattr(dataset, "split", None))


def build_to_disk(process_kwargs: dict, seed: int, directory: Path, work: Path, fingerprint: str) -> dict:
    """Build what ``process(**process_kwargs)`` gives under ``np.random.seed(seed)`` into ``directory``.

    ``directory`` (empty) receives the datasets save; ``work`` (empty) holds the
    intermediate token files. Returns a summary (rows, records, tokens,
    processes). Raises :class:`Unsupported` before writing anything to
    ``directory`` when the arguments are not covered.
    """
    import numpy as np

    encoded = encode_records(process_kwargs, seed, work)
    opts = encoded.opts
    max_length, varlen = opts["max_length"], bool(opts["use_varlen_attn"])
    lens = encoded.lengths()
    n = len(lens)
    if n == 0:
        raise no_sample_left(max_length)
    src_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=src_start[1:])
    if opts["pack_to_max_length"]:
        order = np.arange(n, dtype=np.int64)
        if opts["shuffle_before_pack"]:
            state = np.random.get_state()
            np.random.set_state(encoded.rng_state)
            try:
                order = xtuner_shuffle_permutation(n)
            finally:
                np.random.set_state(state)
        row_start, row_len, varlen_cum = pack_rows(lens[order], max_length, shard_bounds(n, opts["map_num_proc"]),
                                                   varlen)
    else:
        order = np.arange(n, dtype=np.int64)
        row_start, row_len, varlen_cum = src_start[:-1], lens, None
    del lens
    features = _features(varlen)
    tokens = _Tokens(work)
    try:
        written = _write_rows(directory / DATA_FILE, features, tokens, src_start, order, (row_start, row_len),
                              varlen_cum)
    finally:
        tokens.close()
    _write_state(directory, features, fingerprint, encoded.split)
    totals = {k: sum(p[k] for p in encoded.parts) for k in ("rows", "conversations", "records", "tokens")}
    return dict(totals, input_rows=totals.pop("rows"), rows=written, packed_tokens=int(row_len.sum()),
                processes=len(encoded.parts))
