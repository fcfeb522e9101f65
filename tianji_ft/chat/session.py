"""The ``tianji-ft chat`` loop: interactive multi-turn, or one-shot for scripts.

Interactive (a terminal on stdin): each line is a turn, with line editing
and Up/Down history (readline), as in ``ollama run``. ``/clear`` (or
``RESET``) forgets the conversation; ``exit``, ``quit``, ``/bye`` (any case,
or ``EXIT``, or end of input) quits; ``/system TEXT`` sets the system prompt;
``/?`` lists the commands. The newest ``history_turns`` turns are kept. One-shot: ``prompt=`` answers one prompt;
with stdin not a terminal, every non-empty line is answered in a fresh
context, one answer per line, so a script can pipe prompts in.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tianji_ft.chat.engine import GenerationParams, Reply
from tianji_ft.chat.history import HistoryWindow

BANNER = "Type a message and press Enter; /? lists the commands, /bye quits."
HELP = """Commands:
  /clear          forget the conversation (also RESET)
  /system TEXT    set the system prompt (/system alone shows it)
  /?, /help       this list
  /bye            quit (also exit, quit, EXIT, or Ctrl-D)"""
QUIT = frozenset(("exit", "quit", "/bye", "/exit", "/quit"))
LENGTH_HINT = ("(the answer hit --max-new-tokens without a stop token; if answers never end, "
               "the prompt template probably does not match the model: check --template)")


class ChatSession:
    def __init__(self, engine, params: GenerationParams | None = None, history_turns: int | None = 10,
                 stream: bool = True, out: TextIO | None = None, err: TextIO | None = None):
        self.engine = engine
        self.params = params or GenerationParams()
        self.history = HistoryWindow(history_turns)
        self.stream = stream
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._hinted = False

    def answer(self, messages: list[dict], echo: bool = True) -> Reply:
        """Answer ``messages``, printing the answer (streamed when enabled)."""
        if self.stream and echo:
            pieces = self.engine.stream(messages, self.params)
            for piece in pieces:
                self.out.write(piece)
                self.out.flush()
            reply = pieces.reply
        else:
            reply = self.engine.chat(messages, self.params)
            if echo:
                self.out.write(reply.text)
        if echo:
            self.out.write("\n")
            self.out.flush()
        if reply.finish_reason == "length" and not self._hinted:
            print(LENGTH_HINT, file=self.err)
            self._hinted = True
        return reply

    def one_shot(self, prompt: str) -> Reply:
        return self.answer(HistoryWindow(0).messages(prompt))

    def run_lines(self, lines) -> int:
        """Answer every non-empty line in a fresh context; ``EXIT`` stops."""
        count = 0
        for line in lines:
            text = line.rstrip("\r\n")
            if text.strip() == "EXIT":
                break
            if not text.strip() or text.strip() == "RESET":
                continue
            self.answer(HistoryWindow(0).messages(text))
            count += 1
        return count

    def interactive(self, lines, prompt: str = ">>> ") -> None:
        """The multi-turn loop over ``lines`` (a terminal's input; ``prompt=""`` when the line source
        shows the prompt itself, as ``input(prompt)`` does once readline has the terminal)."""
        print(BANNER, file=self.err)
        iterator = iter(lines)
        while True:
            if prompt:
                self.out.write(prompt)
                self.out.flush()
            try:
                text = next(iterator).rstrip("\r\n")
            except StopIteration:
                self.out.write("\n")
                return
            command = text.strip()
            if command.lower() in QUIT:
                return
            if not command:
                continue
            if command == "RESET" or command.startswith("/"):
                self.command(command)
                continue
            reply = self.answer(self.history.messages(text))
            self.history.add(text, reply.text)

    def command(self, command: str) -> None:
        """A ``/`` command of the interactive loop (never sent to the model)."""
        name, _, rest = command.partition(" ")
        name = name.lower()
        if name in ("/clear", "reset"):
            self.history.reset()
            print("History cleared.", file=self.err)
        elif name == "/system":
            if rest.strip():
                self.history.system = rest.strip()
                print("System prompt set.", file=self.err)
            else:
                print(f"System prompt: {self.history.system or '(none)'}", file=self.err)
        elif name in ("/?", "/help"):
            print(HELP, file=self.err)
        else:
            print(f"Unknown command {name}; /? lists the commands.", file=self.err)


def _terminal_lines(prompt: str = ">>> "):
    # input() gives line editing and Up/Down history once readline is loaded; readline() would not.
    # The prompt goes through input() too: keys typed after it appears reach readline, not the
    # terminal's own echo (which would print ^[[A for an arrow).
    try:
        import readline  # noqa: F401
    except ImportError:  # a Python built without it: plain input()
        pass
    while True:
        try:
            yield input(prompt)
        except EOFError:
            return


def run_chat(engine, params: GenerationParams, history_turns: int | None = 10, stream: bool = True,
             prompt: str | None = None, stdin: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    session = ChatSession(engine, params, history_turns, stream)
    if prompt is not None:
        session.one_shot(prompt)
    elif stdin.isatty():
        prompter = engine.prompter
        print(f"{engine.name}: template {prompter.name} (from {prompter.source}), "
              f"system prompt: {prompter.system or '(none)'}", file=sys.stderr)
        session.interactive(_terminal_lines(), prompt="")
    else:
        session.run_lines(stdin)
    return 0
