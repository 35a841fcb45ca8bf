"""Benchmark: the serving path (issue 11) against fastembed in-process on the same model files, same run.

Starts the server as `make run` does (console/serve.py's web command: granian, 1 worker, 16 threads) from a
checkout (`--checkout DIR`, default this repository) on a free port and a temporary DATA_DIR, after
`manage.py migrate` and `manage.py create_cluster --name bench --region us-east-1 --tier paid --json`.
MODELS_DIR comes from the environment (default: the settings' default). Then it prints:

- fastembed in-process (threads = cores) on the same MiniLM-L6 int8 files: batched sentences/s (batches of
  32, best of 3) and single-embed p50, measured before and after the server runs (the best of the two is
  the baseline: the machine is shared and a noisy moment must not flatter the ratios);
- (1) bulk: upsert of 32 Documents per request, sequential: sentences/s and the ratio to fastembed;
- (2) N concurrent clients (default 16), each sending one Document query at a time for a fixed time:
  queries/s, the ratio to fastembed's sentences/s, p50 and p99;
- (3) single Document query p50, sequential, minus fastembed's single-embed p50 (ms); and (3a) the same
  with the server's queries and fastembed's embeds alternating in blocks, so that both meet the same minutes;
- (4) raw-vector query p50 (ms, no model);
- the peak RSS (VmHWM) of the web worker process after (1)-(4), and after (5): concurrent upserts of 32
  Documents of 256+ tokens (the largest batch shape), which shows the memory bound;
- the worker's CPU time per sentence / query in (1) and (2): a figure other load on a shared machine
  disturbs less than wall-clock rates.

Short sentences (5-15 words), every one distinct. Plain HTTP/1.1 keep-alive connections (http.client), so
client-side overhead stays small. `--py-spy BIN` records a GIL profile of the worker during the concurrent
phase and prints a summary (inclusive share per frame). Run:
`.venv/bin/python bench/dataplane.py [--checkout DIR] [--bulk-requests N] [--clients N] [--seconds S]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # the interpreter running this bench serves the checkout too
MODEL = "sentence-transformers/all-minilm-l6-v2"
DIM = 384
COLLECTION = "bench"
COMMAND_TIMEOUT = 180  # seconds, for migrate and create_cluster
STARTUP_TIMEOUT = 60  # seconds for /healthz to answer
SHUTDOWN_TIMEOUT = 30  # seconds between SIGTERM and SIGKILL
CLIENT_TIMEOUT = 120  # seconds, per request

WORDS = (
    "vector database search embedding model query point payload filter cluster region token price "
    "inference image text dense sparse index segment shard replica collection distance cosine dot "
    "the a of and to in is for on with as by at from that this be are was it an or"
).split()


@dataclass(frozen=True)
class Server:
    """Where the benchmark cluster's data plane answers, and the web server's main pid."""

    url: str
    api_key: str
    master_pid: int
    grpc_port: int | None = None  # Qdrant's gRPC API, when the checkout serves it


def sentences(count: int, seed: int) -> list[str]:
    """Distinct short sentences (5-15 words), deterministic."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) + f" n{seed}x{i}" for i in range(count)
    ]


def sentence_stream(seed: int) -> Iterator[str]:
    """An endless stream of distinct short sentences, made as they are needed."""
    rng = random.Random(seed)
    i = 0
    while True:
        yield " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) + f" n{seed}x{i}"
        i += 1


def percentiles(latencies: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.array(latencies) * 1000.0, [50, 99])
    return float(p50), float(p99)


# --- the server ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_python(args: Sequence[str], env: dict[str, str], cwd: Path) -> str:
    """Run the venv's python with ARGS in the server's environment; its stdout, or exit with its stderr."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"python {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def wait_healthy(base_url: str, server: subprocess.Popen[bytes]) -> None:
    """Poll `GET /healthz` until it answers 200, the server exits, or the startup time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    sys.exit(f"the server did not answer /healthz within {STARTUP_TIMEOUT}s")


def no_editable_finder(workdir: Path) -> Path:
    """A directory whose `sitecustomize` removes the venv's editable-install finder from the import system."""
    folder = workdir / "site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    )
    return folder


@contextmanager
def serve(
    checkout: Path, models_dir: str | None, workdir: Path, extra_env: dict[str, str]
) -> Iterator[Server]:
    """Migrate a fresh DATA_DIR, create a cluster, serve the checkout as `make run` does; stopped after."""
    data_dir = workdir / "data"
    data_dir.mkdir()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "PUBLIC_URL": base_url,
        "PORT": str(port),
        "DJANGO_SETTINGS_MODULE": "console.settings",
        # The checkout's code, not whatever the venv has installed: the editable install's finder would
        # otherwise fill in modules the checkout lacks from the repository it was installed from.
        "PYTHONPATH": os.pathsep.join((str(no_editable_finder(workdir)), str(checkout))),
        **extra_env,
    }
    env.pop("DATABASE_URL", None)  # `make run` defaults: SQLite in DATA_DIR
    env.pop("CELERY_BROKER_URL", None)
    if models_dir:
        env["MODELS_DIR"] = models_dir
    else:
        env.pop("MODELS_DIR", None)
    where = run_python(["-c", "import inference; print(inference.__file__)"], env, checkout).strip()
    if not Path(where).resolve().is_relative_to(checkout.resolve()):
        sys.exit(f"the server would import {where}, not the checkout {checkout}")
    run_python(["manage.py", "migrate", "--noinput"], env, checkout)
    created = json.loads(
        run_python(
            [
                "manage.py",
                "create_cluster",
                "--name",
                "bench",
                "--region",
                "us-east-1",
                "--tier",
                "paid",
                "--json",
            ],
            env,
            checkout,
        )
    )
    log = workdir / "server.log"
    grpc_port = free_port()
    env["GRPC_PORT"] = str(grpc_port)
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            web_command(checkout, env, port), cwd=checkout, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            wait_healthy(base_url, server)
            yield Server(
                url=created["url"], api_key=created["api_key"], master_pid=server.pid, grpc_port=grpc_port
            )
        except BaseException:
            print(f"--- server log (tail) ---\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        finally:
            server.terminate()
            try:
                server.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=SHUTDOWN_TIMEOUT)


def web_command(checkout: Path, env: dict[str, str], port: int) -> list[str]:
    """The checkout's own `make run` web command (console/serve.py's `web_argv`: granian, 1 worker), or for
    a checkout from before it, gunicorn as its `make run` started it (the venv must then have gunicorn)."""
    threads = env.get("WEB_THREADS") or "16"  # as `make run` (console/serve.py)
    if "def web_argv" in (checkout / "console" / "serve.py").read_text():
        script = (
            "import json, sys; from pathlib import Path; from console.serve import web_argv; "
            f"print(json.dumps(web_argv(Path(sys.executable).parent, host='127.0.0.1', port='{port}', "
            f"workers=1, threads={int(threads)}, grace={SHUTDOWN_TIMEOUT // 2})))"
        )
        argv: list[str] = json.loads(run_python(["-c", script], env, checkout))
        return argv
    config = ["--config", "python:console.gunicorn_conf"]  # gRPC inside the worker
    return [
        str(VENV_BIN / "gunicorn"), *config, "console.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--threads", threads, "--timeout", str(CLIENT_TIMEOUT),
        "--no-control-socket",  # no shared socket under ~/.gunicorn, which other servers may use
    ]  # fmt: skip


def worker_pid(master_pid: int) -> int:
    """The web server's worker process: the main process's only child."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if len(children) != 1:
        sys.exit(f"expected one web worker process under {master_pid}, found {children}")
    return int(children[0])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (robust to other load on a shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set size) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# --- the client ------------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP connection to the data plane (one per client thread)."""

    def __init__(self, server: Server) -> None:
        parts = urlsplit(server.url)
        self.prefix = parts.path
        self.headers = {"api-key": server.api_key, "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=CLIENT_TIMEOUT
        )

    def call(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Send one request; the status and the decoded JSON answer."""
        self.conn.request(method, self.prefix + path, body=json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        try:
            decoded = json.loads(data)
        except json.JSONDecodeError:
            decoded = {"status": {"error": data[:200].decode(errors="replace")}}
        return response.status, decoded

    def ok(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """Send one request that must succeed."""
        status, decoded = self.call(method, path, body)
        if status != 200:
            sys.exit(f"{method} {path} answered {status}: {decoded.get('status')}")
        return decoded

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def document(text: str) -> dict[str, str]:
    """A Qdrant Document inference object."""
    return {"text": text, "model": MODEL}


def query_body(query: Any) -> dict[str, Any]:
    """A nearest query, top 10, without payload."""
    return {"query": query, "limit": 10, "with_payload": False}


def bulk(server: Server, count: int, batch: int, worker: int) -> tuple[float, float]:
    """Upsert `count` requests of `batch` Documents each, one after the other (after 2 warm-ups).

    Returns sentences/s and the `worker` process's CPU ms per sentence, both over the timed requests only:
    the warm-ups load the model, which is not a per-sentence cost."""
    client = Client(server)
    texts = sentences((count + 2) * batch, seed=1)
    next_id = 0

    def upsert(chunk: list[str]) -> None:
        nonlocal next_id
        points = [{"id": next_id + i, "vector": document(t)} for i, t in enumerate(chunk)]
        next_id += len(chunk)
        client.ok("PUT", f"/collections/{COLLECTION}/points?wait=true", {"points": points})

    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    for chunk in chunks[:2]:
        upsert(chunk)
    cpu = cpu_seconds(worker)
    start = time.perf_counter()
    for chunk in chunks[2:]:
        upsert(chunk)
    elapsed = time.perf_counter() - start
    cpu_ms = (cpu_seconds(worker) - cpu) * 1000.0 / (count * batch)
    client.close()
    return count * batch / elapsed, cpu_ms


def largest_batches(server: Server, clients: int, requests: int, batch: int) -> float:
    """`clients` threads each upserting `requests` requests of `batch` Documents of >= 256 tokens (the
    largest batch shape the model takes); the seconds it took. Run last: it shows the memory bound."""
    text = " ".join(WORDS * 6)  # ~400 tokens: truncated to the 256-token window
    failures: list[str] = []

    def one(index: int) -> None:
        client = Client(server)
        for r in range(requests):
            base = 10_000_000 + (index * requests + r) * batch
            points = [{"id": base + i, "vector": document(f"{base + i} {text}")} for i in range(batch)]
            status, answer = client.call(
                "PUT", f"/collections/{COLLECTION}/points?wait=true", {"points": points}
            )
            if status != 200:
                failures.append(f"{status}: {answer.get('status')}")
        client.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"largest-batch upserts failed: {failures[:3]}")
    return time.perf_counter() - start


def sequential(server: Server, queries: Sequence[Any]) -> list[float]:
    """Send queries one after the other (after 5 warm-ups); the latency of each, in seconds."""
    client = Client(server)
    for query in queries[:5]:
        client.ok("POST", f"/collections/{COLLECTION}/points/query", query_body(query))
    latencies = []
    for query in queries[5:]:
        start = time.perf_counter()
        client.ok("POST", f"/collections/{COLLECTION}/points/query", query_body(query))
        latencies.append(time.perf_counter() - start)
    client.close()
    return latencies


ALTERNATE_BLOCK = 20  # queries per block; the first 2 of each block are not timed (the other side's
# onnxruntime threads may still be spinning, and its own are waking)


def alternating_singles(
    server: Server, fastembed: Any, texts: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Single Document queries to the server and fastembed single embeds in alternating blocks of
    ALTERNATE_BLOCK: the latencies (seconds) of each side.

    Both sides sample the same minutes of a shared machine, so the difference of their p50s is not skewed
    by when each was measured, as (3)'s is: it compares a server p50 from one moment with the baseline's
    best of two others.
    """
    client = Client(server)
    ours: list[float] = []
    theirs: list[float] = []
    for block in range(0, len(texts), ALTERNATE_BLOCK):
        chunk = texts[block : block + ALTERNATE_BLOCK]
        for i, text in enumerate(chunk):
            start = time.perf_counter()
            client.ok("POST", f"/collections/{COLLECTION}/points/query", query_body(document(text)))
            if i >= 2:
                ours.append(time.perf_counter() - start)
        for i, text in enumerate(chunk):
            start = time.perf_counter()
            list(fastembed.embed([text + " ."]))  # not the text the server just embedded
            if i >= 2:
                theirs.append(time.perf_counter() - start)
    client.close()
    return ours, theirs


@dataclass
class LoadResult:
    """What the concurrent clients saw."""

    rate: float  # successful queries/s
    latencies: list[float]
    errors: Counter[int]


def concurrent(server: Server, clients: int, seconds: float, warmup: float) -> LoadResult:
    """`clients` threads, each sending one Document query at a time for `warmup` + `seconds`."""
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[Counter[int]] = [Counter() for _ in range(clients)]
    done = [0] * clients

    def client_loop(index: int) -> None:
        client = Client(server)
        texts = sentence_stream(seed=100 + index)
        while True:
            begin = time.perf_counter()
            if begin >= stop_at:
                break
            status, _ = client.call(
                "POST", f"/collections/{COLLECTION}/points/query", query_body(document(next(texts)))
            )
            end = time.perf_counter()
            if begin >= start_at and end <= stop_at:
                if status == 200:
                    latencies[index].append(end - begin)
                    done[index] += 1
                else:
                    errors[index][status] += 1
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_errors: Counter[int] = Counter()
    for counter in errors:
        all_errors.update(counter)
    return LoadResult(
        rate=sum(done) / seconds, latencies=[x for lst in latencies for x in lst], errors=all_errors
    )


# --- the same queries over gRPC -------------------------------------------------------------------------


class GrpcQueries:
    """Qdrant's `Points.Query` over gRPC with the official client's generated stubs (one channel)."""

    def __init__(self, server: Server) -> None:
        import grpc
        from qdrant_client import grpc as pb

        self.pb = pb
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.stub = pb.PointsStub(self.channel)
        self.metadata = [("api-key", server.api_key)]

    def query(self, query: Any) -> None:
        """One query: a Document (str) or a raw vector (list of floats)."""
        pb = self.pb
        if isinstance(query, str):
            nearest = pb.VectorInput(document=pb.Document(text=query, model=MODEL))
        else:
            nearest = pb.VectorInput(dense=pb.DenseVector(data=query))
        request = pb.QueryPoints(collection_name=COLLECTION, query=pb.Query(nearest=nearest), limit=10)
        self.stub.Query(request, metadata=self.metadata, timeout=CLIENT_TIMEOUT)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def grpc_sequential(server: Server, queries: Sequence[Any]) -> list[float]:
    """As `sequential`, over gRPC."""
    client = GrpcQueries(server)
    for query in queries[:5]:
        client.query(query)
    latencies = []
    for query in queries[5:]:
        start = time.perf_counter()
        client.query(query)
        latencies.append(time.perf_counter() - start)
    client.close()
    return latencies


def grpc_concurrent(server: Server, clients: int, seconds: float, warmup: float) -> LoadResult:
    """As `concurrent`, over gRPC: each client its own channel, one Document query at a time."""
    import grpc

    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[Counter[int]] = [Counter() for _ in range(clients)]

    def client_loop(index: int) -> None:
        client = GrpcQueries(server)
        texts = sentence_stream(seed=200 + index)
        while (begin := time.perf_counter()) < stop_at:
            try:
                client.query(next(texts))
                ok = True
            except grpc.RpcError as exc:
                ok = False
                errors[index][exc.code().value[0]] += 1  # type: ignore[attr-defined]
            end = time.perf_counter()
            if ok and begin >= start_at and end <= stop_at:
                latencies[index].append(end - begin)
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_errors: Counter[int] = Counter()
    for counter in errors:
        all_errors.update(counter)
    flat = [x for lst in latencies for x in lst]
    return LoadResult(rate=len(flat) / seconds, latencies=flat, errors=all_errors)


# --- fastembed baseline ----------------------------------------------------------------------------------


def load_fastembed(model_dir: Path) -> Any:
    """fastembed's TextEmbedding over the same files, on every core, truncating at the catalog's 256."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"bench/{MODEL}"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf=name),
            dim=DIM,
            model_file="model.onnx",
        )
    model = TextEmbedding(name, specific_model_path=str(model_dir), threads=os.cpu_count() or 1)
    model.model.tokenizer.enable_truncation(max_length=256)  # type: ignore[attr-defined]
    list(model.embed(sentences(64, seed=8), batch_size=32))
    return model


def fastembed_baseline(model: Any, batch: int) -> tuple[float, float]:
    """fastembed in-process: batched sentences/s (best of 3 over 512) and single-embed p50 (ms, 200 texts)."""
    texts = sentences(512, seed=9)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        list(model.embed(texts, batch_size=batch))
        times.append(time.perf_counter() - start)
    rate = len(texts) / min(times)
    singles = sentences(205, seed=10)
    latencies = []
    for i, text in enumerate(singles):
        start = time.perf_counter()
        list(model.embed([text]))
        if i >= 5:
            latencies.append(time.perf_counter() - start)
    return rate, statistics.median(latencies) * 1000.0


def installed_model_dir(models_dir: str | None, checkout: Path) -> Path:
    """Where the checkout's settings say MiniLM-L6 is installed (MODELS_DIR from env or default)."""
    site = no_editable_finder(Path(tempfile.mkdtemp(prefix="bench-site-")))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "PYTHONPATH": os.pathsep.join((str(site), str(checkout))),
    }
    if models_dir:
        env["MODELS_DIR"] = models_dir
    code = (
        "import django; django.setup(); from django.conf import settings; from inference import catalog; "
        f"print(catalog.installed_path(settings.MODELS_DIR, {MODEL!r}) or '')"
    )
    path = run_python(["-c", code], env, checkout).strip()
    if not path:
        sys.exit(f"{MODEL} is not installed: run `make setup` (or set MODELS_DIR)")
    return Path(path)


# --- profile ---------------------------------------------------------------------------------------------


def summarize_folded(path: Path, top: int) -> None:
    """Print the inclusive share of GIL samples per frame (function and file) from py-spy's raw output."""
    total = 0
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    groups = {
        "Django ORM / DB driver": ("django/db/", "sqlite3", "psycopg"),
        # py-spy shows no native frames: time inside EdgeShard's binding is EdgeStore's own (self) time.
        "vector storage (inference/storage, incl. EdgeShard)": ("inference/storage/", "qdrant_edge"),
        "engine (inference/engine)": ("inference/engine/",),
        "billing": ("billing/",),
        "DRF / Django request handling": ("rest_framework/", "django/core/handlers", "django/middleware"),
        "web server (gunicorn, granian)": ("gunicorn/", "granian/"),
        "json": ("json/",),
    }
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")[1:]  # the first element is the thread
        names = set()
        for frame in frames:
            func, _, where = frame.partition(" (")
            file = where.rsplit(":", 1)[0]
            names.add(f"{func} ({shorten(file)})")
        for name in names:
            inclusive[name] += count
        for group, needles in groups.items():
            if any(n in stack for n in needles):
                buckets[group] += count
    if not total:
        print("profile: no samples")
        return
    print(f"profile: {total} GIL-holding samples; inclusive share by group (groups overlap):")
    for group, count in buckets.most_common():
        print(f"  {100 * count / total:5.1f}%  {group}")
    print(f"profile: top {top} frames by inclusive share:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def shorten(file: str) -> str:
    """A file path from its package on (site-packages/... or the checkout's top-level packages)."""
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    for package in ("inference/", "console/", "billing/"):
        if f"/{package}" in file:
            return package + file.split(f"/{package}", 1)[1]
    return file


@contextmanager
def profiling(py_spy: str | None, pid: int, seconds: float, out: Path) -> Iterator[None]:
    """Record a GIL profile of `pid` with py-spy while the body runs (nothing when py_spy is None)."""
    if not py_spy:
        yield
        return
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "--threads",
            "--gil",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        _, err = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')[-2000:]}", file=sys.stderr)


# --- main ------------------------------------------------------------------------------------------------


def main() -> None:
    """Run the baseline and the four measures; print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checkout", type=Path, default=REPO, help="serve the code of this checkout")
    parser.add_argument("--bulk-requests", type=int, default=40, help="timed upsert requests")
    parser.add_argument("--batch", type=int, default=32, help="Documents per upsert request")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help="timed length of the concurrent run")
    parser.add_argument("--singles", type=int, default=200, help="timed sequential Document queries")
    parser.add_argument("--long-clients", type=int, default=2, help="concurrent largest-batch clients")
    parser.add_argument("--long-requests", type=int, default=1, help="largest-batch upserts per client")
    parser.add_argument("--raws", type=int, default=300, help="timed sequential raw-vector queries")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra server environment")
    parser.add_argument("--py-spy", help="py-spy binary: profile the worker during the concurrent run")
    default_profile = Path(tempfile.gettempdir()) / "dataplane-profile.txt"
    parser.add_argument("--profile-out", type=Path, default=default_profile)
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    models_dir = os.environ.get("MODELS_DIR")
    extra_env = dict(item.split("=", 1) for item in args.env)

    model_dir = installed_model_dir(models_dir, checkout)
    cores = os.cpu_count() or 1
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    print(
        f"checkout: {checkout} ({head.stdout.strip() or '?'}), cores: {cores}, model: {MODEL} ({model_dir})"
    )
    if extra_env:
        print(f"server environment: {extra_env}")

    with (
        tempfile.TemporaryDirectory(prefix="bench-dataplane-") as tmp,
        serve(checkout, models_dir, Path(tmp), extra_env) as server,
    ):
        worker = worker_pid(server.master_pid)
        fastembed = load_fastembed(model_dir)
        baselines = [fastembed_baseline(fastembed, args.batch)]

        setup = Client(server)
        setup.ok("PUT", f"/collections/{COLLECTION}", {"vectors": {"size": DIM, "distance": "Cosine"}})
        setup.close()
        rate, bulk_cpu_ms = bulk(server, args.bulk_requests, args.batch, worker)
        singles = sequential(server, [document(t) for t in sentences(args.singles + 5, seed=2)])
        alternated = alternating_singles(server, fastembed, sentences(args.singles, seed=5))
        rng = np.random.default_rng(3)
        vectors = rng.uniform(-1, 1, size=(args.raws + 5, DIM)).astype(np.float32).tolist()
        raws = sequential(server, vectors)
        cpu = cpu_seconds(worker)
        with profiling(args.py_spy, worker, args.seconds, args.profile_out):
            load = concurrent(server, args.clients, args.seconds, warmup=1.0)
        served = load.rate * (args.seconds + 1.0)  # the warm-up second included, at about the same rate
        load_cpu_ms = (cpu_seconds(worker) - cpu) * 1000.0 / max(1.0, served)
        rss = peak_rss_mb(worker)
        grpc_load: LoadResult | None = None
        if server.grpc_port is not None:
            grpc_singles = grpc_sequential(server, sentences(args.singles + 5, seed=4))
            grpc_raws = grpc_sequential(server, vectors)
            grpc_load = grpc_concurrent(server, args.clients, args.seconds, warmup=1.0)
        long_s = largest_batches(server, args.long_clients, args.long_requests, args.batch)
        long_rss = peak_rss_mb(worker)
        baselines.append(fastembed_baseline(fastembed, args.batch))

    # The machine is shared: the baseline is measured before and after, and its best is used.
    fe_rate = max(b[0] for b in baselines)
    fe_single = min(b[1] for b in baselines)
    print(
        f"fastembed in-process (threads={cores}): {fe_rate:.0f} sentences/s batched ({args.batch}), "
        f"single embed p50 {fe_single:.2f} ms (best of before/after: "
        + ", ".join(f"{r:.0f}/s {p:.2f} ms" for r, p in baselines)
        + ")"
    )
    print(
        f"(1) bulk upsert, {args.batch} Documents/request, sequential, {args.bulk_requests} requests: "
        f"{rate:.0f} sentences/s, ratio to fastembed {rate / fe_rate:.2f}x "
        f"(server CPU {bulk_cpu_ms:.2f} ms/sentence)"
    )
    c50, c99 = percentiles(load.latencies) if load.latencies else (float("nan"), float("nan"))
    errors = f", errors {dict(load.errors)}" if load.errors else ""
    print(
        f"(2) {args.clients} concurrent clients, one Document query each, {args.seconds:.0f} s: "
        f"{load.rate:.0f} queries/s, ratio to fastembed {load.rate / fe_rate:.2f}x, "
        f"p50 {c50:.1f} ms, p99 {c99:.1f} ms (p99/p50 {c99 / c50:.1f}), "
        f"server CPU ~{load_cpu_ms:.2f} ms/query{errors}"
    )
    s50, s99 = percentiles(singles)
    print(
        f"(3) single Document query p50 {s50:.2f} ms (p99 {s99:.2f}), minus fastembed single embed: "
        f"{s50 - fe_single:+.2f} ms"
    )
    ours50, theirs50 = (statistics.median(side) * 1000.0 for side in alternated)
    print(
        f"(3a) the same, alternating blocks of {ALTERNATE_BLOCK} server queries and fastembed single "
        f"embeds: p50 {ours50:.2f} ms vs {theirs50:.2f} ms, difference {ours50 - theirs50:+.2f} ms"
    )
    r50, r99 = percentiles(raws)
    print(f"(4) raw-vector query p50 {r50:.2f} ms (p99 {r99:.2f})")
    if grpc_load is not None:
        g50, g99 = percentiles(grpc_load.latencies) if grpc_load.latencies else (float("nan"),) * 2
        gerrors = f", errors {dict(grpc_load.errors)}" if grpc_load.errors else ""
        print(
            f"(2g) gRPC, {args.clients} concurrent clients: {grpc_load.rate:.0f} queries/s, ratio to "
            f"fastembed {grpc_load.rate / fe_rate:.2f}x, p50 {g50:.1f} ms, p99 {g99:.1f} ms{gerrors}"
        )
        gs50, _ = percentiles(grpc_singles)
        gr50, _ = percentiles(grpc_raws)
        print(
            f"(3g) gRPC single Document query p50 {gs50:.2f} ms, minus fastembed single embed: "
            f"{gs50 - fe_single:+.2f} ms; (4g) gRPC raw-vector query p50 {gr50:.2f} ms"
        )
    else:
        print("(2g-4g) gRPC: not served by this checkout")
    print(f"web worker process peak RSS: {rss:.0f} MiB")
    print(
        f"(5) largest batch shape: {args.long_clients} clients x {args.long_requests} upserts of "
        f"{args.batch} Documents of 256+ tokens in {long_s:.1f} s; peak RSS after: {long_rss:.0f} MiB"
    )
    if args.py_spy and args.profile_out.exists():
        summarize_folded(args.profile_out, args.profile_top)


if __name__ == "__main__":
    main()
