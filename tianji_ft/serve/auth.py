"""API keys and who may reach the server.

Clients send ``Authorization: Bearer KEY`` (the OpenAI SDK's ``api_key``, an
Ollama client's ``headers``), as with vLLM's ``--api-key`` and the llama.cpp
server's. Keys are compared in constant time and never written anywhere.
A server on an address other than loopback needs a key unless ``--no-auth``
says, explicitly, that it is meant to be open.

Imports nothing heavy: the CLI checks the flags with it before loading a model.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Iterable

from tianji_ft.core.errors import UserError

ENV_VAR = "TIANJI_API_KEY"


def parse_keys(values: Iterable[str] | None) -> tuple[str, ...]:
    """Keys from repeated and/or comma-separated values, blanks dropped, each once."""
    keys: list[str] = []
    for value in values or ():
        for key in value.split(","):
            key = key.strip()
            if key and key not in keys:
                keys.append(key)
    return tuple(keys)


def keys_from(flags: Iterable[str] | None, environ=None) -> tuple[str, ...]:
    """``--api-key`` values, else ``TIANJI_API_KEY``."""
    keys = parse_keys(flags)
    if keys:
        return keys
    environ = os.environ if environ is None else environ
    return parse_keys([environ.get(ENV_VAR, "")])


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: tuple[str, ...], no_auth: bool) -> None:
    """Refuse, in one line, to open a model to the network without a key."""
    if no_auth and keys:
        raise UserError("--no-auth and an API key (--api-key or TIANJI_API_KEY) contradict each other; pick one")
    if not is_loopback(host) and not keys and not no_auth:
        raise UserError(f"refusing to listen on {host} without an API key: anyone who can reach it could use the "
                        f"model. Pass --api-key KEY (or set {ENV_VAR}), or --no-auth to serve it open on purpose")


class KeyCheck:
    """Whether a request's ``Authorization`` header carries one of the keys."""

    def __init__(self, keys: Iterable[str]):
        self._keys = tuple(k.encode("utf-8") for k in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def accepts(self, authorization: str | None) -> bool:
        if not self._keys:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
        found = False
        for key in self._keys:  # every key, every time: the time taken does not say which one matched
            found |= hmac.compare_digest(given_bytes, key)
        return found
