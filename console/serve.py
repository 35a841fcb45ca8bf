"""`python -m console.serve`: what `make run` runs: the web server and the Celery worker (with beat).

A small supervisor instead of a shell `trap 'kill 0'`: that trap re-entered itself on every SIGTERM it
sent to its own process group (hundreds of "Warm shutdown" lines, then bash overflowed its stack and
segfaulted). Here each child runs in its own session, so a terminal's Ctrl-C reaches only this process,
which forwards ONE graceful SIGTERM to each child (granian finishes in-flight requests; Celery finishes
its task), waits up to `SHUTDOWN_TIMEOUT` seconds, kills whatever is left, and exits 0. A second Ctrl-C
kills at once.

It also records the effective settings in the run file (`console/runfile.py`) so `manage.py` commands run
later in the same checkout find the same DATA_DIR, PORT and PUBLIC_URL without exporting them again, and
gives the web server a fresh, empty `PROMETHEUS_MULTIPROC_DIR` (unless one is set), so that `/metrics`
adds up the counts of all its worker processes (`console/metrics.py`) and none of a previous run.
Imports no Django: the children load it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from console import runfile

ROOT = Path(__file__).resolve().parent.parent
# Request threads per web process. 16, not 8: with 16 concurrent clients, twice as many requests wait in the
# ONNX pool together, so the merged batches double (2.2 -> 4.1 inputs mean) and each sentence costs less
# model time (bench/dataplane.py, 16 clients, 3 runs each: +13% queries/s, -12% server CPU per query).
DEFAULT_WEB_THREADS = 16


class Supervisor:
    """Starts the children, forwards the first stop signal once, and reaps them within a deadline."""

    def __init__(self, commands: list[Command], *, timeout: float) -> None:
        self.commands = commands
        self.timeout = timeout
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.deadline = 0.0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + self.timeout
            name = signal.Signals(signum).name
            print(
                f"serve: {name}: stopping (in-flight requests finish, {self.timeout:.0f} s at most)",
                flush=True,
            )
            self._signal_all(signal.SIGTERM)
        elif signum == signal.SIGINT:
            print("serve: second interrupt: killing now", flush=True)
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.poll() is None:
                # SIGKILL goes to the whole group (granian's workers, Celery's pool and beat); SIGTERM to
                # the leader alone, which stops its own children gracefully.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig) if sig == signal.SIGKILL else os.kill(child.pid, sig)

    def run(self) -> int:
        """Run until a stop signal or a child's exit; return the exit status (0 after a requested stop)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for command in self.commands:
            env = {**os.environ, **command.env}
            self.children.append(subprocess.Popen(command.argv, cwd=ROOT, env=env, start_new_session=True))
        status = 0
        while True:
            alive = [child for child in self.children if child.poll() is None]
            if not alive:
                break
            if not self.stopping and len(alive) < len(self.children):
                # One child died on its own: stop the other rather than serve half a system.
                dead = next(child for child in self.children if child.poll() is not None)
                print(f"serve: a child exited with {dead.returncode}: stopping", flush=True)
                status = 1
                self._on_signal(signal.SIGTERM, None)
            if self.stopping and time.monotonic() > self.deadline:
                print("serve: shutdown timeout: killing what is left", flush=True)
                self._signal_all(signal.SIGKILL)
                for child in alive:
                    child.wait()
                break
            time.sleep(0.1)
        for child in self.children:  # a child that died leaves its group behind (e.g. granian's workers)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        return status


class Command(NamedTuple):
    """A child to run: its arguments, and the variables it gets on top of this process's environment."""

    argv: list[str]
    env: dict[str, str]


def commands(env: dict[str, str]) -> list[Command]:
    """The web server and the worker, configured from `env` (as `make run` exports it)."""
    bin_dir = Path(sys.executable).parent
    data_dir = Path(env.get("DATA_DIR") or ROOT / "data")
    grace = float(env.get("SHUTDOWN_TIMEOUT") or 8)
    web = web_argv(
        bin_dir,
        host="0.0.0.0",
        port=env.get("PORT") or "8000",
        workers=web_concurrency(env),
        threads=positive_int(env, "WEB_THREADS", DEFAULT_WEB_THREADS),
        grace=max(1, int(grace) - 2),  # requests in flight finish first, within this supervisor's deadline
    )
    worker = [
        str(bin_dir / "celery"), "-A", "console", "worker", "--loglevel", "INFO", "--concurrency", "1",
        "--beat", "--schedule", str(data_dir / "celerybeat-schedule"),
    ]  # fmt: skip
    # The worker gets no PROMETHEUS_MULTIPROC_DIR: it imports the metrics too, and no web process would ever
    # mark it dead, so its pool gauges would count in the web server's totals forever.
    return [Command(web, metrics_env(env, data_dir)), Command(worker, {})]


def web_argv(
    bin_dir: Path, *, host: str, port: str, workers: int, threads: int, grace: int, make_run: bool = True
) -> list[str]:
    """The web server's command line: granian serving `console.wsgi.served_application` (WSGI), or with
    `make_run=False` the bare `console.wsgi.application` (no gRPC, no replica registration).

    Granian, not gunicorn: its HTTP/1.1 parsing, keep-alive and thread hand-off run in Rust without the GIL,
    where gunicorn's ran in Python on every request (a trivial WSGI app here: 0.73 -> 0.18 ms of server CPU
    per request). Under 16 concurrent Document queries (bench/cpu_split.py, 3 rounds, with the leaner usage
    write of the same change) the CPU per query outside the ONNX workers fell from 5.3-6.1 to 4.1-4.5 ms
    and queries/s rose ~10%. Each worker process runs `threads` request threads; a worker that dies is
    replaced (its successor drops the dead one's live metrics, `console/wsgi.py`).
    """
    target = ["--factory", "console.wsgi:served_application"] if make_run else ["console.wsgi:application"]
    return [
        str(bin_dir / "granian"), "--interface", "wsgi", *target,
        "--host", host, "--port", str(port), "--workers", str(workers), "--blocking-threads", str(threads),
        # No --access-log: the app writes the access lines, with the request id (console/accesslog.py).
        "--no-ws", "--respawn-failed-workers", "--workers-kill-timeout", str(grace),
    ]  # fmt: skip


def metrics_env(env: dict[str, str], data_dir: Path) -> dict[str, str]:
    """What the web server gets on top of the environment for its metrics: nothing when
    PROMETHEUS_MULTIPROC_DIR is set (it inherits that one), else `DATA_DIR/prometheus-multiproc`, which the
    caller empties at start (`fresh_metrics_dir`): counts of a previous run must not be added in."""
    if (env.get("PROMETHEUS_MULTIPROC_DIR") or "").strip():
        return {}
    return {"PROMETHEUS_MULTIPROC_DIR": str(data_dir / "prometheus-multiproc")}


def fresh_metrics_dir(children: list[Command]) -> None:
    """Empty the metrics directory this supervisor chose (never one the environment set: it may be shared)."""
    for child in children:
        chosen = child.env.get("PROMETHEUS_MULTIPROC_DIR")
        if chosen:
            shutil.rmtree(chosen, ignore_errors=True)
            Path(chosen).mkdir(parents=True)


def positive_int(env: dict[str, str], name: str, default: int) -> int:
    """`env[name]` as an integer of at least 1, `default` when unset; exits with a clear message otherwise."""
    raw = (env.get(name) or str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, got {value}")
    return value


def web_concurrency(env: dict[str, str]) -> int:
    """WEB_CONCURRENCY (default 1); more than one web process needs remote storage (QDRANT_URL)."""
    workers = positive_int(env, "WEB_CONCURRENCY", 1)
    if workers > 1 and not (env.get("QDRANT_URL") or "").strip():
        raise SystemExit(
            f"WEB_CONCURRENCY={workers} needs remote vector storage: with the embedded Qdrant Edge storage "
            "only one process may open a cluster's files. Set QDRANT_URL (a Qdrant server) or use "
            "WEB_CONCURRENCY=1."
        )
    return workers


def main() -> int:
    """Record the run settings, then supervise the web server and the worker."""
    env = dict(os.environ)
    children = commands(env)
    fresh_metrics_dir(children)
    try:
        written: object = runfile.write(env)
    except OSError as exc:  # a read-only checkout (a container image): manage.py then needs the variables
        written = f"nowhere ({exc.strerror})"
    port = env.get("PORT") or "8000"
    print(
        f"Serving on http://127.0.0.1:{port}/ and gRPC on 127.0.0.1:{env.get('GRPC_PORT') or 6334} "
        f"(data in {env.get('DATA_DIR') or ROOT / 'data'}; settings recorded in {written})",
        flush=True,
    )
    timeout = float(env.get("SHUTDOWN_TIMEOUT") or 8)
    return Supervisor(children, timeout=timeout).run()


if __name__ == "__main__":
    sys.exit(main())
