"""The conversation an interactive chat keeps: the newest N turns.

When the window is full the oldest turn goes (``history[-N:]``), so the
model always sees what was just said; the system prompt is never dropped.
"""

from __future__ import annotations


class HistoryWindow:
    def __init__(self, max_turns: int | None = None, system: str | None = None):
        if max_turns is not None and max_turns < 0:
            raise ValueError("max_turns must be >= 0 (0 keeps no history)")
        self.max_turns = max_turns
        self.system = system
        self.turns: list[tuple[str, str]] = []

    def add(self, question: str, answer: str) -> None:
        self.turns.append((question, answer))
        if self.max_turns is not None:
            # Keep the newest turns; [-0:] would keep them all, hence the test.
            self.turns = self.turns[-self.max_turns:] if self.max_turns else []

    def reset(self) -> None:
        self.turns.clear()

    def messages(self, question: str) -> list[dict]:
        """The messages for answering ``question`` after the kept turns."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for q, a in self.turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        return messages

    def __len__(self) -> int:
        return len(self.turns)
