"""``tianji-ft pipeline SFT_CONFIG --preference CONFIG``: SFT -> pairs -> DPO/ORPO -> judged against SFT.

After the SFT pipeline (through merge at least), three stages:

- ``pairs``: two sampled answers of the merged SFT model to each prompt of
  ``--pairs-prompts``, judged in both orders (``tianji-ft synth pairs``,
  resumable: a rerun asks only what is missing): ``SFT_WORK/pairs/pairs.jsonl``.
- ``preference``: the preference config's own pipeline (data check, train,
  convert, merge) from the merged SFT model on those pairs, in its
  work dir (default ``work_dirs/CONFIG``); its stage lines go to
  ``SFT_WORK/pipeline-preference.out`` and stages already done are skipped.
- ``judge``: the preference model (A) against the SFT model (B), answers
  judged pairwise (``tianji-ft eval --judge``): ``PREF_WORK/judge`` (report.md,
  metrics.json); verdicts are journaled there, so a rerun pays for none twice.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tianji_ft.core.errors import StepFailed, UserError
from tianji_ft.synth.judge import JudgeEndpoint
from tianji_ft.workflows.pipeline import STAGES, Pipeline, PipelineRequest
from tianji_ft.workflows.stages import Stages

PREFERENCE_STAGES = ("pairs", "preference", "judge")
PAIRS_DIR = "pairs"
JUDGE_DIR = "judge"


@dataclass
class PreferenceRequest:
    config: str  # a preference config (tianji-ft configs list: METHOD ...+dpo / +orpo)
    pairs_prompts: str  # prompts the SFT model answers twice for the pairs
    judge: JudgeEndpoint
    rubric: str = "auto"
    judge_prompts: str | None = None  # the final comparison's prompts; default: the config's evaluation prompts
    work_dir: str | None = None  # the preference run's work dir; default work_dirs/CONFIG (-tiny)
    # the longest answer written, by the candidates and in the final comparison; default: synth pairs' and
    # eval's (core/sampling.py)
    max_new_tokens: int | None = None
    settings: dict | None = None  # TIANJI_* settings of the preference run (default: the config's own)


def check_request(req: PipelineRequest, pref: PreferenceRequest) -> None:
    """Everything that can be wrong with the request, as one line, before any stage runs."""
    from tianji_ft.configs.registry import config_meta, resolve_config

    if STAGES.index(req.until) < STAGES.index("merge"):
        raise UserError(f"--preference starts from the merged SFT model: --until {req.until} stops before merge")
    meta = config_meta(resolve_config(pref.config))
    if not meta.get("objective"):
        raise UserError(f"--preference {pref.config}: not a preference config (no DPO/ORPO objective); "
                        "'tianji-ft configs list' shows them with METHOD ...+dpo or +orpo")
    for flag, path in (("--pairs-prompts", pref.pairs_prompts), ("--judge-prompts", pref.judge_prompts)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")
    pref.judge.api_key()  # a missing endpoint or key stops here, before any training


def run_with_preference(req: PipelineRequest, pref: PreferenceRequest, out=sys.stdout, as_json: bool = False) -> int:
    """The SFT pipeline, then pairs, preference training and the judged comparison; the exit code of the
    last (3: some judgments failed, 4: some not sent under --max-requests)."""
    check_request(req, pref)
    lines = sys.stderr if as_json else out
    sft = Pipeline(req, lines)
    rc = sft.run()
    run = PreferenceRun(sft, pref, lines)
    try:
        rc = run.run() or rc
    finally:
        if as_json:
            print(json.dumps(run.summary(), ensure_ascii=False, indent=2), file=out, flush=True)
    if not as_json and run.preference is not None:
        print(f"next: tianji-ft chat {run.preference.model_dir()}   (report: {run.judge_dir / 'report.md'})",
              file=out, flush=True)
    return rc


class PreferenceRun:
    def __init__(self, sft: Pipeline, pref: PreferenceRequest, out):
        self.sft, self.pref, self.out = sft, pref, out
        self.pairs_dir = sft.work_dir / PAIRS_DIR
        self.preference: Pipeline | None = None
        self.judge_dir: Path | None = None
        self.stages = Stages(list(PREFERENCE_STAGES), out)
        self.exit_code = 0

    def run(self) -> int:
        for name in PREFERENCE_STAGES:
            self.stages.run(name, getattr(self, f"run_{name}"))
        return self.exit_code

    def run_pairs(self) -> str:
        from tianji_ft.chat.pairs import PAIRS_FILE, PairsConfig, run_pairs

        cfg = PairsConfig(prompts=Path(self.pref.pairs_prompts), out_dir=self.pairs_dir, judge=self.pref.judge,
                          rubric=self.pref.rubric, model=str(self.sft.model_dir()))
        if self.pref.max_new_tokens:
            cfg.max_new_tokens = self.pref.max_new_tokens
        log = self.sft.work_dir / "pipeline-pairs.out"
        with open(log, "w", encoding="utf-8") as sink:
            code = run_pairs(cfg, out=sink, err=sink)
        if code:
            raise StepFailed("pairs", code, f"some candidates or judgments failed or were not sent; see {log}, "
                                            "then rerun: what is done is kept")
        pairs = self.pairs_dir / PAIRS_FILE
        kept = sum(1 for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip())
        if not kept:
            raise UserError(f"no preference pair kept in {pairs} (every judgment a tie, inconsistent or identical); "
                            f"see {log}; more --pairs-prompts give the judge more to choose from")
        return f"{kept} pair(s) -> {pairs}"

    def run_preference(self) -> str:
        from tianji_ft.chat.pairs import PAIRS_FILE

        train = replace(self.sft.train_req, config=self.pref.config, model=str(self.sft.model_dir()),
                        data=[str(self.pairs_dir / PAIRS_FILE)], work_dir=self.pref.work_dir,
                        settings=dict(self.pref.settings or {}), cfg_options=[], resume=None)
        # through merge: the judge stage answers its prompts with both models itself
        self.preference = Pipeline(PipelineRequest(train, until="merge"), self.out)
        log = self.sft.work_dir / "pipeline-preference.out"  # its work dir is claimed by its own run
        with open(log, "w", encoding="utf-8") as sink:
            self.preference.out = sink
            self.preference.run()
        ran = [r["stage"] for r in self.preference.stages.results if r["status"] == "ran"]
        done = f"ran {', '.join(ran)}" if ran else "up to date"
        return f"{self.preference.train_req.config} from the SFT model ({done}) -> {self.preference.model_dir()}"

    def run_judge(self) -> str:
        from tianji_ft.chat.engine import GenerationParams
        from tianji_ft.chat.eval_judge import JudgeSpec
        from tianji_ft.chat.evaluate import EvalItem, evaluate, load_prompts
        from tianji_ft.core.sampling import DEFAULTS
        from tianji_ft.synth.judge import summary_line

        if self.pref.judge_prompts:
            items = load_prompts(self.pref.judge_prompts)
        else:
            items = [EvalItem(str(i), [{"role": "user", "content": p}])
                     for i, p in enumerate(self.preference._eval_prompts(), 1)]
        if not items:
            raise UserError(f"{self.pref.config} has no evaluation prompts; pass --judge-prompts FILE")
        self.judge_dir = self.preference.work_dir / JUDGE_DIR
        greedy = {k: v for k, v in DEFAULTS["eval"].items() if k in GenerationParams.__dataclass_fields__}
        if self.pref.max_new_tokens:
            greedy["max_new_tokens"] = self.pref.max_new_tokens
        summary = evaluate(str(self.preference.model_dir()), items, self.judge_dir, compare=str(self.sft.model_dir()),
                           judge=JudgeSpec(self.pref.judge, self.pref.rubric), quiet=True,
                           params=GenerationParams(**greedy))  # as `tianji-ft eval` answers
        judged = summary["judge"]
        self.exit_code = 3 if judged["failed"] else 4 if judged["pending"] else 0  # as `eval --judge` exits
        return summary_line(judged).replace("A vs B", "preference vs SFT", 1) + f" -> {self.judge_dir}"

    def summary(self) -> dict:
        return {"sft": self.sft.summary(ok=True) if self.sft.state else None,
                "preference": {"stages": self.stages.results,
                               "work_dir": str(self.preference.work_dir) if self.preference else None,
                               "pairs": str(self.pairs_dir), "judge": str(self.judge_dir) if self.judge_dir else None}}
