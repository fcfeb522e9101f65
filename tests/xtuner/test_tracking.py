"""The evaluation hook's sample answers reach TensorBoard's text tab (read back with TensorBoard's reader)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from tianji_ft.xtuner.tracking import TAG, SamplesToTrackers


def test_samples_logged_in_each_stage_are_written_at_that_iteration(tmp_path):
    from mmengine.visualization import Visualizer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    visualizer = Visualizer(name="samples-test", vis_backends=[dict(type="TensorboardVisBackend")],
                            save_dir=str(tmp_path))
    logger = logging.getLogger("samples-test")
    logger.setLevel(logging.INFO)
    runner = SimpleNamespace(logger=logger, visualizer=visualizer, iter=0, rank=0)
    hook = SamplesToTrackers()
    hook.before_train(runner)  # nothing logged yet: nothing written
    logger.info("Sample output:\n<|im_start|>user\n祝妈妈生日快乐<|im_end|>\n妈妈，生日快乐！")
    logger.info("after_train_iter in EvaluateChatHook.")  # not a sample
    logger.info("Sample output:\n第二条")
    runner.iter = 8
    hook.after_train_iter(runner, 7)
    hook.after_train_iter(runner, 8)  # nothing new since: nothing written twice
    logger.info("Sample output:\n训练之后")
    runner.iter = 10
    hook.after_train(runner)
    logger.info("Sample output:\n不再收集")  # the hook let go of the logger
    visualizer.close()

    [events] = list(tmp_path.glob("vis_data/events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
    acc.Reload()
    written = [(e.step, e.tensor_proto.string_val[0].decode("utf-8")) for e in acc.Tensors(f"{TAG}/text_summary")]
    assert [step for step, _ in written] == [8, 10]
    assert "妈妈，生日快乐！" in written[0][1] and "第二条" in written[0][1] and "**2.**" in written[0][1]
    assert "训练之后" in written[1][1] and "第二条" not in written[1][1]
    assert not any("不再收集" in text for _, text in written)
