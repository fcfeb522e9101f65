"""``tianji-ft serve``: the app of :mod:`tianji_ft.serve.app` on uvicorn.

:func:`serve` runs in the foreground until Ctrl-C (or SIGTERM); :func:`make_server`
returns a :class:`Server` bound to its address, which tests and the benchmark
start on a thread (``start()`` / ``stop()``).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.core.errors import UserError
from tianji_ft.serve.app import MAX_BODY, Settings, create_app
from tianji_ft.serve.auth import check_exposure, is_loopback

__all__ = ["MAX_BODY", "Server", "make_server", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or a one-line UserError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port") from None
    sock.set_inheritable(True)
    return sock


class Server:
    """uvicorn serving one app on a socket that is already bound."""

    def __init__(self, app, sock: socket.socket, graceful_seconds: int = 5):
        import uvicorn

        self.app, self.socket = app, sock
        config = uvicorn.Config(app, http="h11", ws="none", loop="asyncio", lifespan="off", log_config=None,
                                access_log=False, proxy_headers=False, server_header=False,
                                timeout_graceful_shutdown=graceful_seconds)
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple:
        return self.socket.getsockname()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    def serve_forever(self) -> None:
        self._uvicorn.run(sockets=[self.socket])

    def start(self, timeout: float = 30) -> "Server":
        """Serve on a daemon thread; return once it accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, name="tianji-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def server_close(self) -> None:
        self.app.state.serve.close()
        self.socket.close()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def make_server(engine, host: str = "127.0.0.1", port: int = 8000, *, defaults: GenerationParams | None = None,
                names=(), max_body: int = MAX_BODY, api_keys=(), max_concurrency: int = 1, max_queue: int = 64,
                request_timeout: float = 600.0, cors_origins=(), access_log: bool = True) -> Server:
    sock = bind(host, port)
    try:
        settings = Settings(defaults=defaults or GenerationParams(), names=tuple(names), max_body=max_body,
                            api_keys=tuple(api_keys), max_concurrency=max_concurrency, max_queue=max_queue,
                            request_timeout=request_timeout, cors_origins=tuple(cors_origins), access_log=access_log)
        return Server(create_app(engine, settings), sock)
    except BaseException:
        sock.close()
        raise


def _log_to_stderr() -> None:
    """Access lines and errors on stderr (once; not when the embedding program set up logging)."""
    for name in ("tianji_ft.serve", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def serve(engine, host: str = "127.0.0.1", port: int = 8000, *, no_auth: bool = False, api_keys=(), **kwargs) -> None:
    """Serve until Ctrl-C or SIGTERM; ``kwargs`` as :func:`make_server`'s."""
    api_keys = tuple(api_keys)
    check_exposure(host, api_keys, no_auth)
    server = make_server(engine, host, port, api_keys=api_keys, **kwargs)
    _log_to_stderr()
    if not is_loopback(host) and not api_keys:
        print(f"tianji-ft: warning: listening on {host}, reachable from other machines, with no API key (--no-auth)",
              file=sys.stderr)
    base = server.url
    guard = f"; API key required ({len(api_keys)} accepted)" if api_keys else ""
    print(f"serving {', '.join(sorted(server.app.state.serve.served))} at {base} "
          f"(OpenAI: {base}/v1, Ollama: {base}/api/chat, docs: {base}/docs{guard}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # a second Ctrl-C, or the signal uvicorn re-raises after its graceful stop
        pass
    finally:
        server.server_close()
