"""Benchmark ``tianji-ft serve``: the previous ``http.server`` server against the FastAPI one, side by side.

    .venv/bin/python tools/bench_serve.py [--clients 1 8 32] [--max-tokens 32] [--max-concurrency 1]

Both servers run the tiny InternLM2 model (``tianji_ft.models.tiny``, built
locally, nothing downloaded) on the CPU, each in its own process with one
torch thread, and answer streamed OpenAI requests (``stream: true``,
temperature 0, a fixed ``max_tokens``: the tiny model never stops early, so
every answer is the same length). For each number of concurrent clients the
two servers take turns; each client sends its requests one after another.

Reported per server: requests/s, the median and p95 time to first token
(request sent -> first event with text; the old server sends its role event
before generation starts, so that one does not count), and the server
process's CPU time per request (user + system: the steadiest of the numbers
on a shared machine, where wall-clock times move with everything else).

The previous server is not kept in the package: it is read from git (the
newest commit whose ``tianji_ft/serve/server.py`` is built on ``http.server``, today the
parent of the FastAPI rewrite)
into a temporary folder and imported from there.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_FILES = ("tianji_ft/serve/server.py", "tianji_ft/serve/protocol.py")
QUESTION = "祝姐姐生日快乐,小红书风格"


# --- the previous server, from git ---------------------------------------------------------


def baseline_commit() -> str:
    """The newest commit whose server is the http.server one (both files are read from that one commit)."""
    commits = subprocess.run(["git", "rev-list", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.split()
    for commit in commits:
        shown = subprocess.run(["git", "show", f"{commit}:{SERVER_FILES[0]}"], cwd=ROOT, capture_output=True,
                               text=True)
        if shown.returncode == 0 and "from http.server import" in shown.stdout:
            return commit
    raise SystemExit("bench_serve: no commit has the http.server-based server")


def extract_baseline(commit: str, into: Path) -> Path:
    """``baseline_serve/`` (server.py, protocol.py) from ``commit``, importing each other instead of tianji_ft.serve."""
    package = into / "baseline_serve"
    package.mkdir()
    (package / "__init__.py").write_text('"""tianji-ft serve as of %s."""\n' % commit[:12])
    for path in SERVER_FILES:
        text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
        text = text.replace("from tianji_ft.serve import protocol", "from baseline_serve import protocol")
        text = text.replace("from tianji_ft.serve.protocol import", "from baseline_serve.protocol import")
        (package / Path(path).name).write_text(text)
    return into


# --- one server process ------------------------------------------------------------------------


def run_server(kind: str, model: str, port: int, max_concurrency: int, max_tokens: int) -> None:
    import torch

    torch.set_num_threads(1)
    from tianji_ft.chat.engine import ChatEngine, GenerationParams

    engine = ChatEngine(model, device="cpu", max_concurrency=max_concurrency, name="tiny")
    defaults = GenerationParams(temperature=0.0, max_new_tokens=max_tokens)
    if kind == "old":
        from baseline_serve.server import make_server

        server = make_server(engine, "127.0.0.1", port, defaults=defaults, log_requests=False)
    else:
        from tianji_ft.serve.server import make_server

        server = make_server(engine, "127.0.0.1", port, defaults=defaults, access_log=False,
                             max_concurrency=max_concurrency, max_queue=1024)
    print("ready", flush=True)
    server.serve_forever()


def start_server(kind: str, model: str, max_concurrency: int, max_tokens: int, baseline_dir: Path):
    from tianji_ft.xtuner.runner import free_port

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(baseline_dir), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--model", model, "--port", str(port),
                             "--max-concurrency", str(max_concurrency), "--max-tokens", str(max_tokens)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"bench_serve: the {kind} server did not start")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench_serve: the {kind} server does not answer")


# --- clients -----------------------------------------------------------------------------------------


def one_request(port: int, max_tokens: int) -> tuple[float, float]:
    """(time to first token, total time) of one streamed chat completion."""
    body = json.dumps({"model": "tiny", "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:200]!r}")
    first = None
    while True:
        line = response.readline()
        if not line:
            break
        if first is None and line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
        if line.startswith(b"data: [DONE]"):
            break
    conn.close()
    if first is None:
        raise RuntimeError("no text in the answer")
    return first, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def load(port: int, clients: int, per_client: int, max_tokens: int, pid: int) -> dict:
    ttfts: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client():
        for _ in range(per_client):
            try:
                ttft, _ = one_request(port, max_tokens)
                with lock:
                    ttfts.append(ttft)
            except Exception as err:  # counted, not fatal: the table shows them
                with lock:
                    errors.append(str(err))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    ttfts.sort()
    return {"requests": len(ttfts), "errors": len(errors), "rps": len(ttfts) / wall,
            "cpu_ms_per_request": 1000 * cpu / max(len(ttfts), 1),
            "ttft_median_ms": 1000 * statistics.median(ttfts) if ttfts else float("nan"),
            "ttft_p95_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-client", type=int, default=0, metavar="N",
                        help="default: enough for about 64 requests per run, at least 2 per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-concurrency", type=int, default=1, help="generation slots of both servers (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each server takes per client count")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--serve", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_server(args.serve, args.model, args.port, args.max_concurrency, args.max_tokens)
        return 0

    from tianji_ft.models.tiny import ensure_tiny_model

    model = str(ensure_tiny_model("internlm2"))
    commit = baseline_commit()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        baseline_dir = extract_baseline(commit, Path(tmp))
        servers = {kind: start_server(kind, model, args.max_concurrency, args.max_tokens, baseline_dir)
                   for kind in ("old", "new")}
        try:
            for kind, (proc, port) in servers.items():  # warm up: first-call costs out of the numbers
                load(port, 2, 2, args.max_tokens, proc.pid)
            results = []
            for clients in args.clients:
                per_client = args.requests_per_client or max(2, -(-64 // clients))
                runs = {"old": [], "new": []}
                for _ in range(args.rounds):
                    for kind, (proc, port) in servers.items():
                        runs[kind].append(load(port, clients, per_client, args.max_tokens, proc.pid))
                for kind, found in runs.items():
                    merged = {"server": kind, "clients": clients, "requests": sum(r["requests"] for r in found),
                              "errors": sum(r["errors"] for r in found),
                              "rps": statistics.mean(r["rps"] for r in found),
                              "ttft_median_ms": statistics.mean(r["ttft_median_ms"] for r in found),
                              "ttft_p95_ms": statistics.mean(r["ttft_p95_ms"] for r in found),
                              "cpu_ms_per_request": statistics.mean(r["cpu_ms_per_request"] for r in found)}
                    results.append(merged)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    print(f"tiny internlm2 on CPU, max_tokens {args.max_tokens}, max concurrency {args.max_concurrency}, "
          f"old server from {commit[:12]}, {args.rounds} rounds (means)")
    print("| clients | server | requests/s | TTFT median (ms) | TTFT p95 (ms) | server CPU per request (ms) "
          "| requests | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        name = "http.server (before)" if r["server"] == "old" else "FastAPI + uvicorn"
        print(f"| {r['clients']} | {name} | {r['rps']:.1f} | {r['ttft_median_ms']:.0f} | {r['ttft_p95_ms']:.0f} "
              f"| {r['cpu_ms_per_request']:.1f} | {r['requests']} | {r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
