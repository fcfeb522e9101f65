"""``make demo`` / ``tianji-ft demo``: the seed workflow end to end.

model -> data -> train (XTuner, DeepSpeed ZeRO-2) -> convert (pth_to_hf) ->
merge -> chat. Without ``--model`` it builds the tiny InternLM2 model and
checks that it learned: greedy generation for a training prompt reproduces
that prompt's training answer, and the final loss is at most 20% of the
first. Each stage prints one status line with its elapsed time; full logs go
to the work directory; a failing stage prints its log's last lines and the
demo exits non-zero, naming the stage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tianji_ft.core.errors import StepFailed, UserError
from tianji_ft.core.paths import DATA_DIR
from tianji_ft.workflows.stages import Stages

DEMO_DATA = DATA_DIR / "demo" / "wishes.jsonl"
DEMO_CONFIG = "internlm2_chat_7b_qlora_wishes_e3"
# The seed's LoRA settings; enough steps for the tiny model to memorise eight short answers.
TINY_TRAINING = dict(settings={"TIANJI_EPOCHS": "25", "TIANJI_LR": "2e-3", "TIANJI_MAX_LENGTH": "128",
                               "TIANJI_ACCUM": "1", "TIANJI_WARMUP_RATIO": "0", "TIANJI_SAVE_STEPS": "100000",
                               "TIANJI_EVAL_FREQ": "100000", "TIANJI_EVAL_MAX_NEW_TOKENS": "64",
                               "TIANJI_SEED": "0"},
                     cfg_options=[])
MAX_LOSS_RATIO = 0.2


def read_demo_records(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            turn = json.loads(line)["conversation"][0]
            records.append({"system": turn.get("system", ""), "input": turn["input"], "output": turn["output"]})
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise UserError(f"{path}:{n}: not a conversation record; see tianji-ft data validate") from None
    if not records:
        raise UserError(f"{path}: no records")
    return records


def loss_ratio(work_dir: Path) -> tuple[float, float]:
    from tianji_ft.train.lossplot import read_scalars

    losses = [r["loss"] for r in read_scalars(work_dir)]
    if len(losses) < 2:
        raise UserError(f"{work_dir}: fewer than two logged losses")
    return losses[0], losses[-1]


def greedy_answer(model_dir: Path, system: str, prompt: str, max_new_tokens: int = 64) -> str:
    from tianji_ft.chat.engine import ChatEngine, GenerationParams

    engine = ChatEngine(model_dir, system=system)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return engine.chat(messages, GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens)).text


def run_demo(model: str | None = None, work_dir: str | Path = "work_dirs/demo", data: Path = DEMO_DATA,
             out=sys.stdout) -> int:
    from tianji_ft.weights.convert import convert
    from tianji_ft.weights.merge import merge
    from tianji_ft.train.train import TrainRequest, train

    work_dir = Path(work_dir).resolve()
    train_dir, adapter_dir, merged_dir = work_dir / "train", work_dir / "adapter", work_dir / "merged"
    stages = Stages(["model", "data", "train", "convert", "merge", "chat"], out)
    tiny = model is None
    state: dict = {}

    def build_model():
        from tianji_ft.models.tiny import ensure_tiny_model

        state["model"] = str(ensure_tiny_model("internlm2")) if tiny else model
        return f"{'tiny InternLM2 ' if tiny else ''}model at {state['model']}"

    def load_data():
        state["records"] = read_demo_records(Path(data))
        return f"{len(state['records'])} conversations from {data}"

    def run_training():
        extra = TINY_TRAINING if tiny else {"settings": {}, "cfg_options": []}
        req = TrainRequest(config=DEMO_CONFIG, model=state["model"], data=[str(data)], work_dir=str(train_dir),
                           deepspeed="zero2", settings=dict(extra["settings"]),
                           cfg_options=list(extra["cfg_options"]),
                           quiet=not sys.stderr.isatty())  # a log keeps one line per stage; a terminal sees the run
        train(req, out=open("/dev/null", "w"))
        first, last = loss_ratio(train_dir)
        state["loss"] = (first, last)
        return f"XTuner + DeepSpeed ZeRO-2, loss {first:.3f} -> {last:.3f} (log: {train_dir / 'train.log'})"

    def run_convert():
        convert(train_dir, out_dir=adapter_dir)
        return f"checkpoint -> adapter {adapter_dir}"

    def run_merge():
        merge(state["model"], adapter_dir, merged_dir)
        return f"merged model {merged_dir}"

    def run_chat():
        rec = state["records"][0]
        answer = greedy_answer(merged_dir, rec["system"], rec["input"])
        state["answer"], state["expected"] = answer, rec["output"]
        return f"{rec['input']} -> {answer}"

    try:
        stages.run("model", build_model)
        stages.run("data", load_data)
        stages.run("train", run_training)
        stages.run("convert", run_convert)
        stages.run("merge", run_merge)
        stages.run("chat", run_chat)
    except StepFailed as err:
        print(f"demo failed at stage '{err.step}'", file=out, flush=True)
        return err.exit_code
    if not tiny:
        return 0
    first, last = state["loss"]
    learned = state["answer"].strip() == state["expected"].strip()
    ratio_ok = last <= MAX_LOSS_RATIO * first
    print(f"learned answer reproduced: {'yes' if learned else 'no'} (expected: {state['expected']})", file=out)
    print(f"final loss / first loss = {last / first:.3f} (must be <= {MAX_LOSS_RATIO})", file=out, flush=True)
    if not (learned and ratio_ok):
        print("demo failed at stage 'check': the tiny model did not learn", file=out, flush=True)
        return 1
    print("demo passed", file=out, flush=True)
    return 0
