"""``tianji-ft pipeline``: data -> train -> convert -> merge -> evaluate -> export.

Each stage has a fingerprint: a hash of its own inputs and of the previous
stage's fingerprint. ``WORK_DIR/pipeline.json`` records the fingerprint each
stage last finished with; a stage whose fingerprint is unchanged and whose
outputs exist is skipped. Changing the data changes the train fingerprint,
so the run resumes from training and every later stage follows.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.layout import EVAL, MERGED, OLLAMA, converted_dir, layout
from tianji_ft.core.manifest import read_manifest
from tianji_ft.train.train import TrainRequest
from tianji_ft.core.errors import StepFailed, UserError
from tianji_ft.core.fsio import write_json
from tianji_ft.workflows.stages import Stages

STAGES = ("data", "train", "convert", "merge", "evaluate", "export")
STATE_FILE = "pipeline.json"
# The stage whose outputs each stage reads.
DEPENDS = {"train": "data", "convert": "train", "merge": "convert", "evaluate": "merge", "export": "merge"}


@dataclass
class PipelineRequest:
    train: TrainRequest  # the training stage's request; the other stages follow from its work dir
    export_quant: str | None = None  # None: no export stage
    start: str = "data"  # --from
    until: str = "export"  # --until


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _dir_fingerprint(path: Path) -> list:
    """Names, sizes and mtimes of a directory's files: cheap, and changes whenever its content is rewritten."""
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    return sorted([str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in path.rglob("*") if p.is_file())


class Pipeline:
    def __init__(self, req: PipelineRequest, out=sys.stdout):
        from tianji_ft.train.train import plan

        self.req, self.out = req, out
        self.train_req = req.train
        self.plan = plan(self.train_req)
        self.work_dir: Path = self.plan["work_dir"]
        self.lora = self.plan["manifest"]["lora"]
        folders = layout(self.work_dir)  # the same folders the verbs' default outputs use
        self.paths = {"adapter": converted_dir(self.work_dir, full=not self.lora), "merged": folders[MERGED],
                      "eval": folders[EVAL], "export": folders[OLLAMA]}
        state_path = self.work_dir / STATE_FILE
        self.state = json.loads(state_path.read_text()) if state_path.is_file() else {}

    # --- fingerprints -------------------------------------------------------------
    def output_fingerprint(self, stage: str):
        """What a stage produced, as later stages see it: re-running a stage changes this."""
        if stage == "data":
            return [d["sha256"] for d in self.plan["manifest"]["data"]]
        if stage == "train":
            ckpt = (read_manifest(self.work_dir, required=False) or {}).get("last_checkpoint")
            return [ckpt, _dir_fingerprint(Path(ckpt))] if ckpt and Path(ckpt).exists() else None
        if stage == "merge" and not self.lora:
            return self.output_fingerprint("convert")
        key = {"convert": "adapter", "merge": "merged", "evaluate": "eval", "export": "export"}[stage]
        return _dir_fingerprint(self.paths[key]) if self.paths[key].exists() else None

    def fingerprint(self, stage: str) -> str:
        m = self.plan["manifest"]
        own = {
            "data": self.output_fingerprint("data"),
            "train": [m["config"]["sha256"], m["model"], {k: v for k, v in m["env"].items() if k != "TIANJI_WORK_DIR"},
                      m["cfg_options"], m["deepspeed"]],
            "convert": [],
            "merge": [self.lora, m["model"]],
            "evaluate": [self._eval_prompts()],
            "export": [self.req.export_quant],
        }[stage]
        upstream = self.output_fingerprint(DEPENDS[stage]) if stage in DEPENDS else None
        return _hash(stage, upstream, own)

    def outputs_exist(self, stage: str) -> bool:
        if stage == "data":
            return True
        if stage == "train":
            manifest = read_manifest(self.work_dir, required=False)
            return bool(manifest and manifest.get("exit_code") == 0 and manifest.get("last_checkpoint"))
        key = {"convert": "adapter", "merge": "merged", "evaluate": "eval", "export": "export"}[stage]
        return self.paths[key].exists()

    def _eval_prompts(self) -> list[str]:
        from tianji_ft.configs.registry import config_meta

        meta = config_meta(self.plan["manifest"]["config"]["path"])
        return list(meta.get("eval_prompts") or [])[:6]

    # --- stages -------------------------------------------------------------------
    def run_data(self):
        from tianji_ft.configs.registry import config_meta

        from tianji_ft.xtuner.datacheck import check_plan_data

        checked = check_plan_data(self.plan["env"], self.plan["manifest"]["config"]["path"],
                                  self.plan["manifest"]["cfg_options"])
        data_format = config_meta(self.plan["manifest"]["config"]["path"]).get("data_format", "conversation")
        raw = "" if data_format == "conversation" else f" ({data_format}, through the config's map function)"
        return f"{checked.records} record(s) valid{raw}"

    def run_train(self):
        from tianji_ft.train.train import train

        with open(self.work_dir / "pipeline-train.out", "w") as sink:
            train(self.train_req, out=sink)
        return f"trained -> {read_manifest(self.work_dir)['last_checkpoint']}"

    def run_convert(self):
        from tianji_ft.weights.convert import convert

        convert(self.work_dir, out_dir=self.paths["adapter"])
        return f"{'adapter' if self.lora else 'model'} -> {self.paths['adapter']}"

    def run_merge(self):
        if not self.lora:
            return "full fine-tune: nothing to merge"
        from tianji_ft.weights.merge import merge

        merge(self.plan["manifest"]["model"], self.paths["adapter"], self.paths["merged"])
        return f"merged -> {self.paths['merged']}"

    def model_dir(self) -> Path:
        return self.paths["merged"] if self.lora else self.paths["adapter"]

    def run_evaluate(self):
        from tianji_ft.chat.engine import GenerationParams
        from tianji_ft.chat.evaluate import EvalItem, evaluate

        prompts = self._eval_prompts()
        if not prompts:
            return "no evaluation prompts in the config"
        items = [EvalItem(str(i), [{"role": "user", "content": p}]) for i, p in enumerate(prompts, 1)]
        evaluate(str(self.model_dir()), items, self.paths["eval"], params=GenerationParams(temperature=0.0,
                                                                                           max_new_tokens=128))
        return f"{len(items)} prompts, each in a fresh context -> {self.paths['eval'] / 'answers.jsonl'}"

    def run_export(self):
        if not self.req.export_quant:
            return "skipped (no --export)"
        from tianji_ft.weights.gguf import export_ollama

        export_ollama(self.model_dir(), self.paths["export"], quant=self.req.export_quant)
        return f"GGUF + Modelfile -> {self.paths['export']}"

    # --- driver -------------------------------------------------------------------
    def run(self) -> int:
        for name in (self.req.start, self.req.until):
            if name not in STAGES:
                raise UserError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
        from tianji_ft.core.lock import WorkDirLock
        from tianji_ft.train.train import claim_work_dir

        claim_work_dir(self.plan)
        with WorkDirLock(self.work_dir, "pipeline", warn=lambda msg: print(msg, file=self.out, flush=True)):
            return self._run_stages()

    def _run_stages(self) -> int:
        first, last = STAGES.index(self.req.start), STAGES.index(self.req.until)
        stages = self.stages = Stages(list(STAGES[: last + 1]), self.out)
        for n, stage in enumerate(stages.names):
            if n < first:
                stages.say(stage, f"before --from {self.req.start}, not run", status="not run")
                continue
            fp = self.fingerprint(stage)
            forced = n == first and self.req.start != STAGES[0]
            if not forced and self.state.get(stage) == fp and self.outputs_exist(stage):
                stages.say(stage, "up to date, skipped", status="skipped")
                continue
            stages.run(stage, getattr(self, f"run_{stage}"))
            self.state[stage] = fp
            write_json(self.work_dir / STATE_FILE, self.state)
        return 0

    def next_step(self) -> str | None:
        """The command to run after the last stage that has its output."""
        model = self.model_dir()
        if self.paths["export"].exists() and STAGES.index(self.req.until) >= STAGES.index("export"):
            return f"cd {self.paths['export']} && ollama create NAME -f Modelfile && ollama run NAME"
        if model.exists():
            return f"tianji-ft chat {model}   (or tianji-ft serve {model}; tianji-ft export ollama {model})"
        if self.paths["adapter"].exists():
            return f"tianji-ft merge {self.paths['adapter']}"
        if (read_manifest(self.work_dir, required=False) or {}).get("last_checkpoint"):
            return f"tianji-ft convert {self.work_dir}"
        return None

    def summary(self, ok: bool) -> dict:
        """What ``--json`` prints: each stage's outcome, where the outputs are, the next command."""
        return {"ok": ok, "work_dir": str(self.work_dir),
                "stages": getattr(self, "stages", None) and self.stages.results or [],
                "outputs": {key: str(path) for key, path in self.paths.items() if path.exists()},
                "next": self.next_step()}


def run_pipeline(req: PipelineRequest, out=sys.stdout, as_json: bool = False) -> int:
    """Run the stages; the stage lines go to ``out`` (stderr with ``as_json``, whose summary goes to stdout)."""
    pipeline = Pipeline(req, sys.stderr if as_json else out)
    try:
        rc = pipeline.run()
    except StepFailed:
        if as_json:
            print(json.dumps(pipeline.summary(ok=False), ensure_ascii=False, indent=2), file=out, flush=True)
        raise
    if as_json:
        print(json.dumps(pipeline.summary(ok=True), ensure_ascii=False, indent=2), file=out, flush=True)
    elif pipeline.next_step():
        print(f"next: {pipeline.next_step()}", file=out, flush=True)
    return rc
