"""Load on `rocmre serve` over loopback: throughput, latency and batch-invariance under concurrency, and memory.

    python benchmarks/serve_load.py --model runs/smoke_serve [--requests 400] [--concurrency 64]

Starts `rocmre serve` on the model folder (nothing is trained here) on 127.0.0.1, builds distinct valid entity
pairs from MNRE test sentences, answers each once sequentially (the reference, each pair alone: concurrency 1),
then sends them all at the given concurrency twice: once alone (baseline) and once with one slow request (a text
at the server's character limit) sent among them, while /health is polled (10 a second) from a process of its own
(this one's event loop is busy with the load). The load's client is aiohttp. The server groups concurrent requests
into shared forward passes (dynamic batching, --max-batch-size / --max-batch-delay-ms); every concurrent answer
must give the same relation, ranking and scores (within 1e-6) as the sequential one, and no request may fail.
Also measures `predict_batch` on the same pairs in this process (the model's own batched speed). Reports
throughput, p50/p95/p99 latency, /health latency under load, the slow request's effect on the others, and the
server's RSS before and after. Sized for 2 CPU cores: the defaults take a few minutes with a small model. Writes
benchmarks/results/serve_load.json (with a top-level "summary") and serve_load.md; exits 1 on any error or
mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

Request = dict[str, Any]


def git_commit() -> str:
    """``git rev-parse HEAD`` of this checkout (``unknown`` outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def working_tree_dirty() -> bool | None:
    """Whether tracked files differ from HEAD (the numbers then come from uncommitted code on top of it)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.stdout.strip())


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB (psutil, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2 ** 20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"cannot read the memory of process {pid}")


def mnre_pairs(data: str, n: int, max_tokens: int) -> list[Request]:
    """``n`` distinct valid /predict bodies (token text, token spans) from MNRE test sentences."""
    from rocmre.data import load_split

    dataset = load_split(data, "test")
    seen: set[tuple] = set()
    out: list[Request] = []
    for rec in dataset.records:
        if rec.head.is_object or rec.tail.is_object or len(rec.tokens) > max_tokens:
            continue
        (hs, he), (ts, te) = rec.head.span, rec.tail.span
        if hs < te and ts < he:  # same or overlapping spans: not a valid pair for the service
            continue
        key = (tuple(rec.tokens), hs, he, ts, te)
        if key in seen:
            continue
        seen.add(key)
        out.append({"text": list(rec.tokens), "head": {"start": hs, "end": he}, "tail": {"start": ts, "end": te},
                    "top_k": 3})
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} distinct valid pairs in the MNRE test split; asked for {n}")


def slow_request(base: Request, max_chars: int) -> Request:
    """A text of exactly ``max_chars`` characters: ``base``'s sentence, then filler words; entities by characters."""
    tokens: list[str] = base["text"]
    sentence = " ".join(tokens)
    starts = [sum(len(t) + 1 for t in tokens[:i]) for i in range(len(tokens) + 1)]

    def chars(span: dict[str, int]) -> dict[str, int]:
        return {"char_start": starts[span["start"]], "char_end": starts[span["end"]] - 1}

    filler = " and then the crowd cheered again"
    text = sentence + (filler * (max_chars // len(filler) + 1))
    text = text[:max_chars].rstrip()
    text = text + "." * (max_chars - len(text))
    return {"text": text, "head": chars(base["head"]), "tail": chars(base["tail"]), "top_k": 3}


def percentiles(values: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(qs[49], 1), "p95_ms": round(qs[94], 1), "p99_ms": round(qs[98], 1),
            "mean_ms": round(statistics.fmean(values), 1), "max_ms": round(max(values), 1)}


def load_client(url: str, timeout: float, connections: int = 1) -> Any:
    """The load's HTTP client: aiohttp, whose C parser leaves the CPU to the server (an httpx client at
    concurrency 200 took more CPU than the server it measured, on the same 2 cores)."""
    import aiohttp

    return aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                 connector=aiohttp.TCPConnector(limit=connections))


async def post_json(client: Any, body: Request) -> tuple[int, bytes]:
    async with client.post("/predict", json=body) as r:
        return r.status, await r.read()


async def sequential(url: str, bodies: list[Request], timeout: float) -> tuple[list[Any], list[float]]:
    answers, times = [], []
    async with load_client(url, timeout) as client:
        for body in bodies:
            start = time.perf_counter()
            status, payload = await post_json(client, body)
            times.append((time.perf_counter() - start) * 1000)
            answers.append(json.loads(payload) if status == 200
                           else {"status": status, "text": payload.decode(errors="replace")})
    return answers, times


async def concurrent(url: str, bodies: list[Request], concurrency: int, timeout: float,
                     slow: tuple[int, Request] | None, hostile: bool = False) -> dict[str, Any]:
    """All ``bodies`` with at most ``concurrency`` in flight; ``slow`` = (position, body) is sent among them, and
    with ``hostile`` one request of each hostile kind (:func:`hostile_requests`) after the first 50 are sent."""
    import httpx

    order: list[tuple[str, int, Request]] = [("pair", i, b) for i, b in enumerate(bodies)]
    if slow is not None:
        order.insert(slow[0], ("slow", 0, slow[1]))
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    async with load_client(url, timeout, concurrency) as client:

        async def one(kind: str, i: int, body: Request) -> None:
            async with gate:
                sent = time.perf_counter()
                try:
                    status, payload = await post_json(client, body)
                    answer: Any = json.loads(payload) if status == 200 else None
                    error = None if status == 200 else f"HTTP {status}: {payload[:200].decode(errors='replace')}"
                except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                    answer, error = None, f"{type(e).__name__}: {e}"
                results[kind, i] = {"sent": sent, "done": time.perf_counter(), "answer": answer, "error": error}

        async def attack() -> list[dict[str, Any]]:
            if not hostile:
                return []
            while len(results) < min(50, len(order) // 4):
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=url, timeout=timeout) as own:
                return await send_hostile(own, hostile_requests(bodies[0]))

        with HealthProbe(url, timeout):  # /health polled from its own process while the load runs
            start = time.perf_counter()
            refused, *_ = await asyncio.gather(attack(), *(one(kind, i, body) for kind, i, body in order))
            wall = time.perf_counter() - start
        health = HealthProbe.last_latencies
    return {"results": results, "wall_s": wall, "health_ms": health, "hostile": refused}


#: how often the probe asks /health under load, in seconds (load balancers ask every few seconds; 10 a second gives
#: about 100 latencies per concurrent run)
HEALTH_POLL_S = 0.1


def _poll_health(url: str, timeout: float, interval: float, stop: Any, ready: Any, out: Any) -> None:
    """(in a process of its own) GET /health every ``interval`` s on one connection until ``stop`` is set,
    saying ``ready`` after the first answer; the latencies in ms go to ``out``."""
    import httpx

    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=timeout) as probe:
        probe.get("/health")
        ready.set()
        while not stop.is_set():
            sent = time.perf_counter()
            probe.get("/health")
            latencies.append((time.perf_counter() - sent) * 1000)
            time.sleep(interval)
    out.send(latencies)


class HealthProbe:
    """Polls /health from a separate process, so that its latencies are the server's and not those of this
    process's event loop, which is busy with the load's own requests and responses."""

    last_latencies: list[float] = []

    def __init__(self, url: str, timeout: float, interval: float = HEALTH_POLL_S) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.stop, self.ready = ctx.Event(), ctx.Event()
        self.receive, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_poll_health, args=(url, timeout, interval, self.stop, self.ready, send),
                                   daemon=True)

    def __enter__(self) -> HealthProbe:
        """Starts the probe and returns once it polls (its start-up is not part of the load's time)."""
        self.process.start()
        self.ready.wait(60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        HealthProbe.last_latencies = self.receive.recv() if self.receive.poll(60) else []
        self.process.join(10)


def hostile_requests(body: Request) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One request of each kind a hostile probe once froze or broke the server with (issue 41): (name, method,
    path, httpx arguments). Each must be refused with a 4xx while the load runs, leaving /health responsive."""
    text, head, tail = body["text"], body["head"], body["tail"]
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    return [
        ("regex backtracking (escaped quotes in deep JSON)", "POST", "/predict",
         {"content": b"[" * 40 + b'"' + b'\\"' * 36_000, "headers": {"content-type": "application/json"}}),
        ("lone surrogate in a relation name", "POST", "/relations",
         {"content": b'{"x\\ud800": ["The head x the tail."]}', "headers": {"content-type": "application/json"}}),
        ("lone surrogate in a description", "POST", "/relations",
         {"content": b'{"/x/y": ["bad \\udc80 text"]}', "headers": {"content-type": "application/json"}}),
        ("a batch of 600,000 items", "POST", "/predict/batch",
         {"content": b"[" + b"{}," * 599_999 + b"{}]", "headers": {"content-type": "application/json"}}),
        ("an integer of 5,000 digits", "POST", "/predict",
         {"content": json.dumps({"text": text, "head": head, "tail": tail}).encode()[:-1] + b', "top_k": '
          + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}}),
        ("a cross-site text/plain form", "POST", "/relations",
         {"content": b'{"/x/z": ["The head z the tail."]}', "headers": {"content-type": "text/plain"}}),
        ("an EPS image upload", "POST", "/predict",
         {"data": {"text": "Barack Obama was born in Paris.", "head": "Barack Obama", "tail": "Paris"},
          "files": {"image": ("x.eps", eps)}}),
    ]


async def send_hostile(client: Any, requests: list[tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send the hostile requests one after another (among the load); each one's status and latency."""
    import httpx

    out = []
    for name, method, path, kwargs in requests:
        sent = time.perf_counter()
        try:
            status: int | str = (await client.request(method, path, **kwargs)).status_code
        except httpx.TransportError as e:  # a dropped connection is a refusal too, but say so
            status = f"connection closed ({type(e).__name__})"
        out.append({"request": name, "status": status, "ms": round((time.perf_counter() - sent) * 1000, 1),
                    "refused": isinstance(status, str) or 400 <= status < 500})
    return out


SCORE_TOLERANCE = 1e-6


def score_difference(a: Any, b: Any) -> float | None:
    """The largest score difference between two answers with the same relation, ranking, descriptions and
    entities; None when they differ in any of those."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    rest = ("score", "top_k")
    if {k: v for k, v in a.items() if k not in rest} != {k: v for k, v in b.items() if k not in rest}:
        return None
    if [(c["relation"], c["description"]) for c in a["top_k"]] != [(c["relation"], c["description"])
                                                                     for c in b["top_k"]]:
        return None
    pairs = zip(a["top_k"], b["top_k"], strict=True)
    return max([abs(a["score"] - b["score"])] + [abs(x["score"] - y["score"]) for x, y in pairs])


def same_answer(a: Any, b: Any) -> bool:
    """Same relation, ranking, descriptions and entities, scores within :data:`SCORE_TOLERANCE`."""
    diff = score_difference(a, b)
    return diff is not None and diff <= SCORE_TOLERANCE


def analyse(run: dict[str, Any], reference: list[Any], slow_reference: Any) -> dict[str, Any]:
    results = run["results"]
    pairs = [results["pair", i] for i in range(len(reference))]
    latencies = [(r["done"] - r["sent"]) * 1000 for r in pairs]
    errors = [r["error"] for r in pairs if r["error"]]
    mismatches = sum(1 for r, ref in zip(pairs, reference, strict=True)
                     if not r["error"] and not same_answer(r["answer"], ref))
    diffs = [score_difference(r["answer"], ref) for r, ref in zip(pairs, reference, strict=True) if not r["error"]]
    out: dict[str, Any] = {"requests": len(pairs), "errors": len(errors), "mismatches": mismatches,
                           "identical": sum(1 for r, ref in zip(pairs, reference, strict=True) if r["answer"] == ref),
                           "max_score_diff": max((d for d in diffs if d is not None), default=0.0),
                           "wall_s": round(run["wall_s"], 1), "throughput_rps": round(len(pairs) / run["wall_s"], 1),
                           **percentiles(latencies), "first_errors": errors[:5]}
    if len(run.get("health_ms", [])) >= 2:
        out["health"] = {"polls": len(run["health_ms"]), **percentiles(run["health_ms"])}
    if run.get("hostile"):
        out["hostile"] = run["hostile"]
    if ("slow", 0) in results:
        s = results["slow", 0]
        out["slow"] = {"latency_ms": round((s["done"] - s["sent"]) * 1000, 1), "error": s["error"],
                       "identical_to_sequential": same_answer(s["answer"], slow_reference)}
        # the others in flight or queued when the slow one ran: sent before it finished, done after it was sent
        overlapping = [(r["done"] - r["sent"]) * 1000 for r in pairs if r["sent"] < s["done"] and r["done"] > s["sent"]]
        out["slow"]["overlapping_requests"] = len(overlapping)
        out["slow"]["overlapping_p50_ms"] = round(statistics.median(overlapping), 1) if overlapping else None
    return out


def predict_batch_speed(model: Path, bodies: list[Request], cache_dir: str, batch_size: int) -> dict[str, Any]:
    """The model's own batched speed on the same pairs in this process, in pairs/s (timed on a second pass: the
    first tags the entities' types, which the server had cached from its sequential pass)."""
    from rocmre.inference.extractor import PairInput, RelationExtractor

    extractor = RelationExtractor.from_pretrained(model, cache_dir=cache_dir)
    pairs = [PairInput(b["text"], b["head"], b["tail"]) for b in bodies]
    list(extractor.predict_batch(pairs, batch_size=batch_size, top_k=3))
    start = time.perf_counter()
    list(extractor.predict_batch(pairs, batch_size=batch_size, top_k=3))
    wall = time.perf_counter() - start
    return {"pairs": len(pairs), "batch_size": batch_size, "wall_s": round(wall, 1),
            "pairs_per_s": round(len(pairs) / wall, 1)}


def start_server(model: Path, port: int, max_text_chars: int, cache_dir: str, log: Path,
                 batching: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rocmre", "serve", "--model", str(model), "--host", "127.0.0.1", "--port",
           str(port), "--max-text-chars", str(max_text_chars), "--cache-dir", cache_dir, "--log-level", "warning",
           *batching]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("ROCMRE_API_TOKEN", None)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server did not answer /health within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="A trained model folder (nothing is trained).")
    parser.add_argument("--data", default="mnre/RE_data", help="MNRE (relative to $ROCMRE_DATA is fine).")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=None, help="The server's dynamic batching: most pairs "
                        "in one forward pass (default: the server's, 32; also predict_batch's batch size here).")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, help="The server's longest wait for more "
                        "requests (default: the server's, 2 ms).")
    parser.add_argument("--max-text-chars", type=int, default=2000, help="The server's text limit; the slow "
                        "request has exactly this many characters.")
    parser.add_argument("--slow-at", type=int, default=100, help="Position of the slow request among the others.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Per-request timeout, seconds.")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model folder (no config.json); train one first, e.g. "
                         "rocmre train --config configs/smoke_roc.yaml --output-dir runs/smoke_serve")

    from rocmre.service.app import free_port

    bodies = mnre_pairs(args.data, args.requests, max_tokens=200)
    slow = slow_request(bodies[0], args.max_text_chars)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args.results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rocmre-serve-load-") as tmp:
        log = Path(tmp) / "server.log"
        batching = [*(["--max-batch-size", str(args.max_batch_size)] if args.max_batch_size else []),
                    *(["--max-batch-delay-ms", str(args.max_batch_delay_ms)] if args.max_batch_delay_ms is not None
                      else [])]
        proc = start_server(args.model, port, args.max_text_chars, str(Path(tmp) / "cache"), log, batching)
        try:
            wait_healthy(url, proc, timeout=180)
            asyncio.run(sequential(url, bodies[:3], args.timeout))  # warm-up (lazy imports, description vectors)
            rss_before = rss_mb(proc.pid)
            t0 = time.perf_counter()
            reference, seq_times = asyncio.run(sequential(url, bodies, args.timeout))
            (slow_reference,), (slow_alone_ms,) = asyncio.run(sequential(url, [slow], args.timeout))
            seq_wall = time.perf_counter() - t0
            baseline = analyse(asyncio.run(concurrent(url, bodies, args.concurrency, args.timeout, None)),
                               reference, slow_reference)
            main_run = analyse(asyncio.run(concurrent(url, bodies, args.concurrency, args.timeout,
                                                      (args.slow_at, slow), hostile=True)), reference, slow_reference)
            rss_after = rss_mb(proc.pid)
            speed = predict_batch_speed(args.model, bodies, str(Path(tmp) / "cache"), args.max_batch_size or 32)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server_log = log.read_text(errors="replace")
    bad_reference = sum(1 for a in reference if "status" in a)
    log_errors = [line for line in server_log.splitlines() if line.startswith("ERROR") or "Traceback" in line]

    summary = {"requests": main_run["requests"], "concurrency": args.concurrency, "errors": main_run["errors"],
               "mismatches": main_run["mismatches"], "p50_ms": main_run["p50_ms"], "p95_ms": main_run["p95_ms"],
               "p99_ms": main_run["p99_ms"], "rss_mb_before": round(rss_before, 1),
               "rss_mb_after": round(rss_after, 1), "commit": git_commit(),
               "throughput_rps": baseline["throughput_rps"], "predict_batch_pairs_per_s": speed["pairs_per_s"],
               "throughput_over_predict_batch": round(baseline["throughput_rps"] / speed["pairs_per_s"], 2),
               "c1_p50_ms": percentiles(seq_times)["p50_ms"],
               "health_p99_ms": max(r.get("health", {}).get("p99_ms", 0.0) for r in (baseline, main_run)),
               "batch_invariant": not (baseline["mismatches"] or main_run["mismatches"]
                                       or not main_run["slow"]["identical_to_sequential"]),
               "max_score_diff": max(baseline["max_score_diff"], main_run["max_score_diff"])}
    command = "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:])
    report = {
        "summary": summary,
        "command": command,
        "working_tree_dirty": working_tree_dirty(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": str(args.model),
        "max_text_chars": args.max_text_chars,
        "slow_at": args.slow_at,
        "batching": {"max_batch_size": args.max_batch_size or 32, "max_batch_delay_ms": 2.0
                     if args.max_batch_delay_ms is None else args.max_batch_delay_ms},
        "predict_batch": speed,
        "sequential": {"requests": len(bodies), "errors": bad_reference, "wall_s": round(seq_wall, 1),
                       **percentiles(seq_times), "slow_request_alone_ms": round(slow_alone_ms, 1)},
        "concurrent_with_slow_request": main_run,
        "concurrent_baseline_without_slow_request": baseline,
        "slow_request_effect": {
            "slow_latency_alone_ms": round(slow_alone_ms, 1),
            "slow_latency_under_load_ms": main_run["slow"]["latency_ms"],
            "p50_delta_ms": round(main_run["p50_ms"] - baseline["p50_ms"], 1),
            "p95_delta_ms": round(main_run["p95_ms"] - baseline["p95_ms"], 1),
            "p99_delta_ms": round(main_run["p99_ms"] - baseline["p99_ms"], 1),
        },
        "server_log_errors": log_errors[:10],
    }
    (args.results / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.results / "serve_load.md").write_text(markdown(report), encoding="utf-8")
    print(json.dumps(summary, indent=2))
    failed = (main_run["errors"] or main_run["mismatches"] or baseline["errors"] or baseline["mismatches"]
              or bad_reference or main_run["slow"]["error"] or not main_run["slow"]["identical_to_sequential"]
              or log_errors or not all(h["refused"] for h in main_run.get("hostile", [])))
    if failed:
        print("FAILED: errors, mismatches or server log errors (see serve_load.json)", file=sys.stderr)
        sys.exit(1)


def markdown(r: dict[str, Any]) -> str:
    s, m, b, q = (r["summary"], r["concurrent_with_slow_request"], r["concurrent_baseline_without_slow_request"],
                  r["sequential"])
    e = r["slow_request_effect"]
    mc = r["machine"]
    row = "| {name} | {requests} | {errors} | {mismatches} | {p50_ms} | {p95_ms} | {p99_ms} | {mean_ms} | {max_ms} | " \
          "{wall_s} |"
    lines = [
        "# `rocmre serve` under load (loopback)",
        "",
        f"Command: `{r['command']}`  ",
        f"Commit: `{s['commit']}`{' (with uncommitted changes)' if r['working_tree_dirty'] else ''}, "
        f"{r['date']}  ",
        f"Machine: {mc['cpu']}, {mc['cores']} cores, Python {mc['python']}, {mc['platform']}; client and server "
        "on the same machine.  ",
        f"Model: `{r['model']}`; server text limit {r['max_text_chars']} characters; dynamic batching: at most "
        f"{r['batching']['max_batch_size']} pairs per forward pass, gathered for at most "
        f"{r['batching']['max_batch_delay_ms']} ms; pairs share a pass only when their inputs have the same padded "
        "shape (token count rounded up to 8; batch-invariant answers).",
        "",
        f"{s['requests']} distinct valid pairs from MNRE test sentences, sent at concurrency {s['concurrency']}: "
        f"**{s['errors']} errors, {s['mismatches']} answers differing from the sequential answer**. Server RSS "
        f"{s['rss_mb_before']} MB before the load, {s['rss_mb_after']} MB after it.",
        "",
        "| run | requests | errors | mismatches | p50 ms | p95 ms | p99 ms | mean ms | max ms | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        row.format(name="sequential (reference)", mismatches="-", **q),
        row.format(name=f"concurrency {s['concurrency']}, no slow request", **b),
        row.format(name=f"concurrency {s['concurrency']}, one slow request among them", **m),
        "",
        f"Throughput: {b['throughput_rps']} req/s without the slow request, {m['throughput_rps']} req/s with it; "
        f"`predict_batch` on the same pairs in one process: {r['predict_batch']['pairs_per_s']} pairs/s (ratio "
        f"{s['throughput_over_predict_batch']}). One request at a time (concurrency 1): p50 {s['c1_p50_ms']} ms. "
        f"`/health` under load (polled every {HEALTH_POLL_S * 1000:.0f} ms from its own process): p99 "
        f"{s['health_p99_ms']} ms.",
        "",
        "Hostile requests sent among the load of the run with the slow request, one of each kind that once froze "
        "or broke the server: " + ("; ".join(f"{h['request']}: {h['status']} in {h['ms']} ms"
                                             for h in m.get("hostile", [])) or "none") + ".",
        "",
        f"Batch-invariant: {s['batch_invariant']} (every concurrent answer has the sequential answer's relation, "
        f"ranking and descriptions, scores within 1e-6; largest score difference {s['max_score_diff']:.2g}; "
        f"bit-identical: {b['identical']} and {m['identical']} of {s['requests']}).",
        "",
        f"**The slow request** ({r['max_text_chars']} characters, sent after the first {r['slow_at']} of them): "
        f"{e['slow_latency_alone_ms']} ms alone, {e['slow_latency_under_load_ms']} ms under load (it waits in the "
        f"queue like the others); identical to its sequential answer: {m['slow']['identical_to_sequential']}. "
        f"Its effect on the others: p50 {e['p50_delta_ms']:+} ms, p95 {e['p95_delta_ms']:+} ms, p99 "
        f"{e['p99_delta_ms']:+} ms against the run without it; the {m['slow']['overlapping_requests']} requests in "
        f"flight or queued while it ran had a median latency of {m['slow']['overlapping_p50_ms']} ms. Its forward "
        f"pass takes about {round(e['slow_latency_alone_ms'] - q['p50_ms'])} ms longer than a typical request's, "
        "and the batches queued behind it wait that much longer; the percentile deltas between the two "
        "concurrent runs also carry the run-to-run noise of the machine (other processes included).",
        "",
        f"Server log ERROR lines / tracebacks: {len(r['server_log_errors'])}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
