"""The evaluation hook's sample answers, sent to the experiment trackers beside the loss.

XTuner's ``EvaluateChatHook`` writes the answers it generates during training
("Sample output: ...") to the run's log only; with ``--report-to`` they belong
on the board next to the loss curve. :class:`SamplesToTrackers` listens to the
runner's logger for those messages and, after each stage the evaluation hook
runs in (before training, after an iteration, after training), writes them as
text to every visualizer backend: TensorBoard's text tab, a W&B table.
A config lists it in ``custom_hooks`` after ``EvaluateChatHook``.
"""

from __future__ import annotations

import logging

SAMPLE_PREFIX = "Sample output:"
TAG = "eval/samples"


class _SampleCatcher(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(SAMPLE_PREFIX):
            self.samples.append(message[len(SAMPLE_PREFIX):].strip())


def _hook_base():
    from mmengine.hooks import Hook

    return Hook


class SamplesToTrackers(_hook_base()):
    """``dict(type=SamplesToTrackers)`` in ``custom_hooks``; does nothing without a visualizer backend."""

    priority = "LOWEST"  # after EvaluateChatHook in each stage, so this stage's samples are all caught

    def __init__(self):
        self._catcher: _SampleCatcher | None = None

    def before_train(self, runner) -> None:
        self._catcher = _SampleCatcher()
        runner.logger.addHandler(self._catcher)
        self._send(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._send(runner)

    def after_train(self, runner) -> None:
        self._send(runner)
        if self._catcher is not None:
            runner.logger.removeHandler(self._catcher)
            self._catcher = None

    def _send(self, runner) -> None:
        if self._catcher is None or not self._catcher.samples:
            return
        samples, self._catcher.samples = self._catcher.samples, []
        if getattr(runner, "rank", 0) != 0:
            return
        backends = getattr(getattr(runner, "visualizer", None), "_vis_backends", None) or {}
        for backend in backends.values():
            send_samples(backend, samples, runner.iter)


def send_samples(backend, samples: list[str], step: int) -> None:
    """Write ``samples`` at ``step`` to one mmengine visualizer backend (TensorBoard, W&B; others skip)."""
    kind = type(backend).__name__
    if kind == "TensorboardVisBackend":
        # Markdown: each answer in a fenced block, so the template's tags show as they are.
        text = "\n\n".join(f"**{n}.**\n\n```\n{sample}\n```" for n, sample in enumerate(samples, 1))
        backend.experiment.add_text(TAG, text, step)
        backend.experiment.flush()
    elif kind == "WandbVisBackend":
        import wandb

        table = wandb.Table(columns=["iter", "n", "sample"], data=[[step, n, s] for n, s in enumerate(samples, 1)])
        backend.experiment.log({TAG: table}, commit=False)
