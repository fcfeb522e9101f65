"""Fixtures shared by the XTuner-side tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def caught_log():
    """Messages sent to mmengine's current logger during the test."""
    import logging

    from mmengine.logging import MMLogger

    messages: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Catch(level=logging.INFO)
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
