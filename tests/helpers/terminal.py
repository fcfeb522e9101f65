"""Run ``tianji-ft`` in a real pseudo-terminal and return what a person would see."""

from __future__ import annotations

import codecs
import os
import pty
import subprocess
import sys


def run_in_a_terminal(args: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


class Terminal:
    """``tianji-ft ARGS`` on a pseudo-terminal that a test types into, like a person at a keyboard."""

    def __init__(self, args: list[str], cols: int = 100):
        import fcntl
        import struct
        import termios

        self.leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], stdin=follower, stdout=follower,
                                     stderr=follower, close_fds=True)
        os.close(follower)
        self.screen = ""
        # a character may arrive split across two reads: decode incrementally, never chunk by chunk
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def read_until(self, text: str, since: int = 0, timeout: float = 120.0) -> int:
        """Read until ``text`` appears after position ``since`` of the screen; return where it ends
        (AssertionError on timeout, or when the program ends first)."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while text not in self.screen[since:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; the screen shows:\n{self.screen[-2000:]}"
            ready, _, _ = select.select([self.leader], [], [], min(left, 1.0))
            if ready:
                try:
                    data = os.read(self.leader, 4096)
                except OSError:
                    data = b""
                assert data, f"the program ended before {text!r}:\n{self.screen[-2000:]}"
                self.screen += self._decoder.decode(data)
        return self.screen.index(text, since) + len(text)

    def type(self, keys: str) -> None:
        import time

        time.sleep(0.3)  # as a person would: the line editor has the terminal before the keys arrive
        os.write(self.leader, keys.encode("utf-8"))

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.leader)
