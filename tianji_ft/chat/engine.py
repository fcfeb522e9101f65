"""The one chat engine behind ``tianji-ft chat``, ``eval``, ``serve`` and ``web``.

It loads a Hugging Face model (optionally with a LoRA adapter, optionally
4/8-bit), renders messages with the resolved prompt template, and generates
one answer, a batch of answers, or a stream of text pieces. Every answer
records whether it ended on a stop token ("stop") or ran into the token limit
("length"): a model that never stops is the sign of a template mismatch.
"""

from __future__ import annotations

import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tianji_ft.chat.prompting import TOKENIZER_TEMPLATE, Prompter, resolve_prompter
from tianji_ft.core.templates import get_template
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import local_model_dir


@dataclass
class GenerationParams:
    """Sampling settings; the defaults are ``xtuner chat``'s. temperature 0 is greedy."""

    temperature: float = 0.1
    top_p: float = 0.75
    top_k: int = 40
    repetition_penalty: float = 1.0
    max_new_tokens: int = 2048
    seed: int | None = 0
    stop: tuple[str, ...] = ()  # extra stop strings on top of the template's


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop": ended on a stop token or word; "length": hit max_new_tokens
    prompt_tokens: int
    completion_tokens: int


def adapter_base(model: str) -> str | None:
    """For an adapter folder passed as the model: the base it was trained on (its run manifest's, else
    PEFT's ``base_model_name_or_path``); None for anything else."""
    import json

    path = Path(model)
    if not (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return None
    from tianji_ft.core.manifest import model_manifest

    base = model_manifest(path).get("model") or json.loads(
        (path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{model}: a LoRA adapter that names no base model; pass the base and --adapter {model}")
    return base


def _check_model_path(model: str) -> None:
    path = Path(model)
    if path.exists():
        if not (path / "config.json").is_file():
            hint = " (an XTuner work dir? convert it with 'tianji-ft convert' first)" if path.is_dir() else ""
            raise UserError(f"{model}: not a Hugging Face model folder, no config.json{hint}")
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise UserError(f"{model}: no such model folder; pass a local model path or a hub id like internlm/internlm2-chat-7b")


class ChatEngine:
    def __init__(self, model: str | Path, adapter: str | Path | None = None, template: str | None = "auto",
                 system: str | None = None, bits: int | None = None, device: str = "auto",
                 max_concurrency: int = 1, name: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = str(model)
        base = adapter_base(model)
        if base is not None:  # an adapter folder as MODEL: its base with it on top
            if adapter:
                raise UserError(f"{model} is itself an adapter; pass its base model as MODEL with --adapter")
            model, adapter = base, model
            print(f"tianji-ft: {adapter} is a LoRA adapter: loading it on its base {model}", file=sys.stderr)
        _check_model_path(model)
        model = str(local_model_dir(model))  # a hub id: its cached copy, or one line now (no network retries)
        if adapter and not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: this machine has no CUDA GPU that torch can use; "
                            "leave --device out (auto) or pass --device cpu")
        if bits and not device.startswith("cuda"):
            raise UserError(f"--bits {bits} needs a CUDA GPU (bitsandbytes); leave it out on CPU")
        self.device = device
        self.name = name or Path(model.rstrip("/")).name
        if template not in (None, "auto", TOKENIZER_TEMPLATE):
            get_template(template)  # a typo fails now, not after the model has loaded
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True)
        except (OSError, ValueError) as err:
            raise UserError(f"{model}: cannot load its tokenizer ({str(err).splitlines()[0]}); "
                            "check the path, or download the model first") from None
        self.tokenizer.padding_side = "left"  # batched generation continues on the right
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompter: Prompter = resolve_prompter(self.tokenizer, model, adapter, template, system)
        for warning in self.prompter.warnings:
            print(f"tianji-ft: warning: {warning}", file=sys.stderr)

        kwargs = dict(trust_remote_code=True)
        if device.startswith("cuda"):
            kwargs["torch_dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            kwargs["torch_dtype"] = torch.float32
        if bits:
            from transformers import BitsAndBytesConfig

            kwargs["device_map"] = "auto"
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=kwargs["torch_dtype"],
                bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        if not bits:
            self.model.to(device)
        self.model.eval()
        self._stop_ids, self._stop_strings = self._stops(self.prompter.stop_words)
        # Fast tokenizers fail ("Already borrowed") when threads pad at once.
        self._tok_lock = threading.Lock()
        # Generation runs on these persistent threads; more requests than
        # workers wait in the executor's queue.
        self._workers = ThreadPoolExecutor(max(1, max_concurrency), thread_name_prefix="tianji-generate")

    # --- prompt and stop handling -------------------------------------------------

    def _stops(self, words) -> tuple[set[int], list[str]]:
        """Stop words that are single tokens stop by id; others by string."""
        # The tokenizer's EOS always stops, as in ``xtuner chat``.
        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        if self.prompter.template is None:  # tokenizer template: trust the model's own EOS list
            eos = getattr(self.model.generation_config, "eos_token_id", None)
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        strings = []
        vocab = self.tokenizer.get_vocab()
        for word in words:
            if word in vocab:
                ids.add(vocab[word])
            else:
                strings.append(word)
        return ids, strings

    def render(self, messages: list[dict]) -> str:
        with self._tok_lock:
            return self.prompter.render(messages)

    def _gen_config(self, params: GenerationParams, extra_stops=()):
        from transformers import GenerationConfig

        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=sample,
            temperature=params.temperature if sample else 1.0, top_p=params.top_p if sample else 1.0,
            top_k=params.top_k if sample else 50, repetition_penalty=params.repetition_penalty,
            eos_token_id=sorted(self._stop_ids), pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        strings = [*self._stop_strings, *params.stop, *extra_stops]
        if strings:
            config.stop_strings = strings
        return config, strings

    def _finish(self, ids: list[int], stop_strings: list[str]) -> tuple[str, str, int]:
        """(text, finish_reason, completion token count) for one generated row."""
        finish, count = "length", len(ids)
        for i, token in enumerate(ids):
            if token in self._stop_ids:
                ids, finish, count = ids[:i], "stop", i + 1
                break
        with self._tok_lock:
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
        cut = _first_stop(text, stop_strings)
        if cut is not None:
            text, finish = text[:cut], "stop"
        return text, finish, count

    # --- generation -----------------------------------------------------------------

    def _generate(self, enc, config, seed, cancel: threading.Event, streamer=None):
        """Runs on a worker thread. Persistent workers matter on CPU: every new
        thread that calls torch starts its own OpenMP team, and the idle team
        of the previous thread spins on the cores the new one needs."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        if cancel.is_set():  # the caller gave up while this waited in the queue
            return None
        if seed is not None:
            torch.manual_seed(seed)
        return self.model.generate(input_ids=enc["input_ids"].to(self.device),
                                   attention_mask=enc["attention_mask"].to(self.device),
                                   generation_config=config, tokenizer=self.tokenizer, streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([_Cancelled()]))

    def chat(self, messages: list[dict], params: GenerationParams | None = None) -> Reply:
        return self.chat_batch([messages], params)[0]

    def chat_batch(self, conversations: list[list[dict]], params: GenerationParams | None = None) -> list[Reply]:
        """Answer several independent conversations in one padded batch."""
        params = params or GenerationParams()
        texts = [self.render(m) for m in conversations]
        with self._tok_lock:
            enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        config, strings = self._gen_config(params)
        cancel = threading.Event()
        try:
            out = self._workers.submit(self._generate, enc, config, params.seed, cancel).result()
        except BaseException:  # Ctrl-C: stop the worker too, or exit waits for it
            cancel.set()
            raise
        width = enc["input_ids"].shape[1]
        replies = []
        for row, mask in zip(out.tolist(), enc["attention_mask"].tolist()):
            text, finish, count = self._finish(row[width:], strings)
            replies.append(Reply(text, finish, int(sum(mask)), count))
        return replies

    def stream(self, messages: list[dict], params: GenerationParams | None = None) -> "TextStream":
        return TextStream(self, messages, params or GenerationParams())

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)


def _first_stop(text: str, stop_strings) -> int | None:
    hits = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stop_strings) -> int:
    """How many trailing characters may be the start of a stop string or a split character."""
    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
        return len(text) - len(text.rstrip("\ufffd"))
    hold = 0
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class TextStream:
    """Iterate to get text pieces as they are generated; ``reply`` is set at the end.

    Generation runs on one of the engine's workers (queued behind others).
    Closing the iterator early (a client went away) stops generation at the
    next token.
    """

    def __init__(self, engine: ChatEngine, messages: list[dict], params: GenerationParams):
        self.engine, self.params = engine, params
        self.prompt = engine.render(messages)
        self.reply: Reply | None = None
        self._cancel = threading.Event()

    def __iter__(self) -> Iterator[str]:
        from transformers.generation.streamers import BaseStreamer

        engine, tokens = self.engine, queue.Queue()

        class _Tokens(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                tokens.put(value.reshape(-1).tolist())

            def end(self):
                pass

        with engine._tok_lock:
            enc = engine.tokenizer(self.prompt, add_special_tokens=False, return_tensors="pt")
        config, strings = engine._gen_config(self.params)
        failure: list[BaseException] = []

        def run():
            try:
                engine._generate(enc, config, self.params.seed, self._cancel, _Tokens())
            except BaseException as err:  # surfaced in the consumer's thread
                failure.append(err)
            finally:
                tokens.put(None)

        engine._workers.submit(run)
        ids: list[int] = []
        text, sent, finish = "", 0, "length"
        try:
            while True:
                piece = tokens.get()
                if piece is None:
                    break
                if finish == "stop":
                    continue  # drain what the generator still reports
                for token in piece:
                    if token in engine._stop_ids:
                        finish = "stop"
                        break
                    ids.append(token)
                with engine._tok_lock:
                    text = engine.tokenizer.decode(ids, skip_special_tokens=False)
                cut = _first_stop(text, strings)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                end = len(text) if finish == "stop" else len(text) - _held_back(text, strings)
                if end > sent:
                    yield text[sent:end]
                    sent = end
            if failure:
                raise failure[0]
            if sent < len(text):
                yield text[sent:]
            self.reply = Reply(text, finish, int(enc["input_ids"].shape[1]), len(ids) + (finish == "stop"))
        finally:
            self._cancel.set()
