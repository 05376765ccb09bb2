"""Load test of ``mmguard serve``: requests/s, client-side latency, errors and server memory per configuration.

For each guard (``--guards``, default the issue's target ``mmssl``), fitted in ``--quick`` mode on
data of the digital twin's shapes (a 3x64x64 ``camera`` and a 31-d ``kinematics`` vector; the
synthetic data and the fit of ``export_latency.py``), and each configuration — ``--workers`` 1 and 2,
``--backend`` torch and onnx (the ONNX file is exported once, passed with ``--onnx-model``) — the
script starts ``mmguard serve`` as a subprocess on a free loopback port with a bearer token, waits for
``GET /ready``, and then drives ``/v1/score`` and ``/v1/transform`` in turn, each for ``--duration``
seconds after a warm-up, with batch-1 NPZ bodies (camera + kinematics; the JSON format does not fit an
image guard) taken in turn from a faulty test batch.

Load tool (decision): an asyncio ``httpx`` client holding a fixed number of requests in flight
(``--concurrency``, a closed loop: a new request leaves as soon as one returns). httpx is already a
dev dependency and the loop is ~40 lines; a locust run would add gevent and a second process
scheduler on the same 2 cores for no extra information.

Per configuration and endpoint it reports requests/s, p50/p90/p99/max latency (ms, measured by the
client, connection reuse on), errors (non-2xx answers and exceptions), the server's resident memory
(``VmRSS`` of the server process and all its children) at the start and end of the timed phase and
its maximum, CPU seconds per request of the client and of the server (``/proc/<pid>/stat``), and,
with one worker, the server's own view from ``GET /metrics``: its request-latency histogram
(count, mean, bucket quantiles) and how many requests each guard call coalesced. A breakdown of
the server-side work of one batch-1 request (NPZ decode and checks, the guard call, response
encoding), timed in-process, shows where the CPU goes. Usage::

    .venv/bin/python benchmarks/serve_load.py                      # 4 configs x 2 endpoints x 60 s (~10 min)
    .venv/bin/python benchmarks/serve_load.py --quick              # a few seconds per phase; no JSON unless --out
    .venv/bin/python benchmarks/serve_load.py --guards restore,dae --concurrency 8 --duration 120

Writes ``benchmarks/results/serve_load.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

import mmguard
from export_latency import IMAGE, KINEMATICS, fit_quick, timed, twin_like
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import make_splits
from mmguard.export.onnx import export_onnx
from mmguard.export.runtime import OnnxGuard
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import Guard
from mmguard.serve import codec

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
NPZ = "application/x-npz"
ENDPOINTS = ("/v1/score", "/v1/transform")
TARGET = {"requests_per_s": 500, "p99_ms": 20.0, "errors": 0, "duration_s": 60}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ====================================================================== server process
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mmguard_command() -> list[str]:
    script = Path(sys.executable).with_name("mmguard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mmguard.cli.main import main; main()"]


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (from ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents[ppid].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def rss_mb(pids: list[int]) -> dict[int, float]:
    """``VmRSS`` of each process, MiB (processes that are gone are left out)."""
    out = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
        if m:
            out[pid] = int(m.group(1)) / 1024
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (``/proc/<pid>/stat`` utime + stime)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class Server:
    """``mmguard serve`` in a subprocess; memory sampled once a second while it runs."""

    def __init__(self, guard_dir: Path, *, workers: int, backend: str, onnx_model: Path | None, token_file: Path,
                 threads: int, batch_wait_ms: float | None, log: Path) -> None:
        self.port = free_port()
        cmd = [*mmguard_command(), "serve", str(guard_dir), "--port", str(self.port), "--workers", str(workers),
               "--backend", backend, "--token-file", str(token_file), "--log-level", "warning"]
        if onnx_model is not None:
            cmd += ["--onnx-model", str(onnx_model)]
        if batch_wait_ms is not None:
            cmd += ["--batch-wait-ms", str(batch_wait_ms)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.cmd = cmd
        self.log = log
        self._log_fh = log.open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT)
        self.samples: list[tuple[float, float]] = []  # (time, total RSS MiB)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def rss(self) -> dict[int, float]:
        return rss_mb(self.pids())

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append((time.monotonic(), sum(self.rss().values())))

    def wait_ready(self, headers: dict[str, str], timeout: float = 180.0) -> float:
        """Seconds until ``GET /ready`` answered 200 (the server died or never got ready: RuntimeError)."""
        t0 = time.monotonic()
        with httpx.Client(timeout=5.0, headers=headers) as client:
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mmguard serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
                try:
                    if client.get(f"{self.url}/ready").status_code == 200:
                        self._sampler.start()
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"mmguard serve not ready after {timeout:.0f} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()
        return int(self.proc.returncode)


# ====================================================================== load
async def closed_loop(client: httpx.AsyncClient, url: str, bodies: list[bytes], concurrency: int,
                      seconds: float) -> dict[str, Any]:
    """``concurrency`` requests in flight for ``seconds``: latencies of the answers, errors by kind."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()

    async def user(k: int) -> None:
        while loop.time() < end:
            body = bodies[k % len(bodies)]
            k += concurrency
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=body)
            except Exception as exc:  # any failure of a request is counted, never fatal
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if not 200 <= r.status_code < 300:
                errors[f"HTTP {r.status_code}"] += 1

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(concurrency)))
    return {"latencies": latencies, "errors": dict(errors), "wall_s": time.perf_counter() - t0,
            "client_cpu_s": time.process_time() - c0}


def check_answer(endpoint: str, response: httpx.Response, names: list[str]) -> None:
    """The first answer of a phase is decoded and checked (later ones only by status)."""
    response.raise_for_status()
    if endpoint == "/v1/score":
        body = response.json()
        assert body["modalities"] == names and len(body["scores"]) == 1 and len(body["scores"][0]) == len(names)
    else:
        with np.load(io.BytesIO(response.content), allow_pickle=False) as z:
            assert sorted(z.files) == sorted(names)
            assert z["camera"].shape == (1, *IMAGE) and z["kinematics"].shape == (1, KINEMATICS)


def run_phase(server: Server, endpoint: str, bodies: list[bytes], headers: dict[str, str], names: list[str],
              args: argparse.Namespace, workers: int) -> dict[str, Any]:
    url = server.url + endpoint
    pids = server.pids()

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30.0, headers={**headers, "content-type": NPZ}) as c:
            check_answer(endpoint, await c.post(url, content=bodies[0]), names)
            await closed_loop(c, url, bodies, args.concurrency, args.warmup)
            before = await scrape(c, server.url)
            rss0, cpu0 = server.rss(), cpu_seconds(pids)
            s0 = time.monotonic()
            run = await closed_loop(c, url, bodies, args.concurrency, args.duration)
            run["server_cpu_s"] = cpu_seconds(pids) - cpu0
            rss1 = server.rss()
            after = await scrape(c, server.url)
            run["rss_series"] = [round(mb, 1) for t, mb in server.samples if t >= s0]
            return run, {"start": rss0, "end": rss1}, before, after

    run, rss, before, after = asyncio.run(go())
    lat = np.asarray(run.pop("latencies")) * 1e3
    done = len(lat)
    ok = done - sum(v for k, v in run["errors"].items() if k.startswith("HTTP"))
    series = run.pop("rss_series")
    out: dict[str, Any] = {
        "endpoint": endpoint, "requests": done, "ok": ok, "seconds": round(run["wall_s"], 2),
        "requests_per_s": round(ok / run["wall_s"], 1),
        "p50_ms": round(float(np.quantile(lat, 0.5)), 2) if done else None,
        "p90_ms": round(float(np.quantile(lat, 0.9)), 2) if done else None,
        "p99_ms": round(float(np.quantile(lat, 0.99)), 2) if done else None,
        "max_ms": round(float(lat.max()), 2) if done else None,
        "mean_ms": round(float(lat.mean()), 2) if done else None,
        "errors": sum(run["errors"].values()), "error_kinds": run["errors"],
        "rss_mb_start": round(sum(rss["start"].values()), 1), "rss_mb_end": round(sum(rss["end"].values()), 1),
        "rss_mb_max": round(max(series, default=sum(rss["end"].values())), 1),
        "rss_mb_per_process_end": [round(v, 1) for v in rss["end"].values()],
        "rss_series_mb": series,
        "client_cpu_ms_per_request": round(1e3 * run["client_cpu_s"] / max(done, 1), 3),
        "server_cpu_ms_per_request": round(1e3 * run["server_cpu_s"] / max(done, 1), 3),
        "client_cpu_s": round(run["client_cpu_s"], 1), "server_cpu_s": round(run["server_cpu_s"], 1),
    }
    if workers == 1:  # with several workers /metrics shows whichever worker answered
        out["server_metrics"] = server_view(before, after, endpoint)
    return out


# ====================================================================== the server's own metrics
METRIC = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN|\+Inf)$')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


async def scrape(client: httpx.AsyncClient, base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await client.get(f"{base}/metrics")
    r.raise_for_status()
    return parse_metrics(r.text)


def histogram(before: dict, after: dict, name: str, **labels: str) -> dict[str, Any]:
    """Count, mean and bucket-interpolated quantiles of a histogram's growth between two scrapes."""
    want = set(labels.items())

    def value(metric: str, extra: dict[str, str] | None = None) -> float:
        key_labels = frozenset(want | set((extra or {}).items()))
        return after.get((metric, key_labels), 0.0) - before.get((metric, key_labels), 0.0)

    count, total = value(f"{name}_count"), value(f"{name}_sum")
    bounds = sorted({float(dict(k[1])["le"]) for k in after if k[0] == f"{name}_bucket" and want <= set(k[1])})
    cum = [value(f"{name}_bucket", {"le": _le(b)}) for b in bounds]

    def quantile(q: float) -> float | None:
        if count <= 0:
            return None
        rank, lo, prev = q * count, 0.0, 0.0
        for b, c in zip(bounds, cum, strict=True):
            if c >= rank:
                if b == float("inf"):
                    return lo
                return lo + (b - lo) * (rank - prev) / max(c - prev, 1e-12)
            lo, prev = b, c
        return None

    return {"count": int(count), "mean": total / count if count else None,
            "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99)}


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def server_view(before: dict, after: dict, endpoint: str) -> dict[str, Any]:
    lat = histogram(before, after, "mmguard_request_duration_seconds", endpoint=endpoint)
    op = "score" if endpoint == "/v1/score" else "transform"
    coalesced = histogram(before, after, "mmguard_batch_requests", op=op)
    ms = {k: (None if lat[k] is None else round(1e3 * lat[k], 2)) for k in ("mean", "p50", "p90", "p99")}
    return {"requests": lat["count"], "latency_ms": ms, "guard_calls": coalesced["count"],
            "requests_per_guard_call": None if coalesced["mean"] is None else round(coalesced["mean"], 2)}


# ====================================================================== where the time goes
def breakdown(guard: Guard, onnx: OnnxGuard | None, body: bytes, one: MultimodalBatch, reps: int
              ) -> dict[str, float]:
    """Median ms of each server-side step of one batch-1 request, in-process on one thread."""
    specs, limit = guard.specs, codec.npz_limit(guard.specs, 256)

    def med(fn: Callable[[], Any]) -> float:
        return round(1e3 * statistics.median(timed(fn, reps, max(5, reps // 10))), 3)

    fixed, scores, names = guard.transform(one), guard.score(one), list(guard.names)
    out = {
        "npz_decode_and_checks": med(lambda: codec.to_batch(codec.decode_npz(body, limit), specs, 256)),
        "torch_score": med(lambda: guard.score(one)),
        "torch_transform": med(lambda: guard.transform(one)),
        "score_json_response": med(lambda: json.dumps({"modalities": names, "threshold": 1.0,
                                                       "scores": scores.tolist()})),
        "transform_npz_response": med(lambda: codec.encode_npz(codec.batch_arrays(fixed))),
    }
    if onnx is not None:
        out["onnx_score"] = med(lambda: onnx.score(one))
        out["onnx_transform"] = med(lambda: onnx.transform(one))
    return out


# ====================================================================== main
def npz_bodies(test: MultimodalBatch, count: int) -> list[bytes]:
    bodies = []
    for i in range(min(count, len(test))):
        buf = io.BytesIO()
        np.savez(buf, **{n: test.modalities[n][i:i + 1].numpy().astype(np.float32) for n in test.names})
        bodies.append(buf.getvalue())
    return bodies


def server_stack() -> str:
    """What uvicorn's ``auto`` picks in the server's environment: httptools/uvloop when installed, else h11/asyncio."""
    code = "import importlib.util as u; print(bool(u.find_spec('httptools')), bool(u.find_spec('uvloop')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False).stdout.split()
    return f"{'httptools' if out[:1] == ['True'] else 'h11'}/{'uvloop' if out[1:2] == ['True'] else 'asyncio'}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def verdict(row: dict[str, Any], duration: float) -> dict[str, Any]:
    return {"requests_per_s_met": row["requests_per_s"] >= TARGET["requests_per_s"],
            "p99_met": row["p99_ms"] is not None and row["p99_ms"] <= TARGET["p99_ms"],
            "errors_met": row["errors"] == 0, "duration_met": duration >= TARGET["duration_s"],
            "requests_per_s_margin": round(row["requests_per_s"] / TARGET["requests_per_s"] - 1, 3),
            "p99_margin": None if row["p99_ms"] is None else round(1 - row["p99_ms"] / TARGET["p99_ms"], 3)}


def configurations(args: argparse.Namespace) -> Iterator[tuple[str, str, int]]:
    for name in args.guard_names:
        for backend in args.backends:
            for workers in args.workers:
                yield name, backend, workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="timed seconds per configuration and endpoint")
    ap.add_argument("--warmup", type=float, default=5.0, help="untimed seconds of load before each timed phase")
    ap.add_argument("--quick", action="store_true", help="3 s phases, 1 s warm-up (a smoke run); no JSON unless --out")
    ap.add_argument("--guards", default="mmssl", help="guards to serve, comma-separated (default: mmssl)")
    ap.add_argument("--workers", default="1,2", help="worker counts (comma-separated)")
    ap.add_argument("--backends", default="torch,onnx", help="backends (comma-separated)")
    ap.add_argument("--endpoints", default=",".join(ENDPOINTS), help="endpoints (comma-separated)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests the client keeps in flight")
    ap.add_argument("--server-threads", type=int, default=1, help="OMP/MKL threads of each server worker")
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="server --batch-wait-ms (default: its own)")
    ap.add_argument("--breakdown-reps", type=int, default=300, help="calls per in-process step timing (0: none)")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON results (default: {RESULTS}; --quick: none)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.breakdown_reps = 3.0, 1.0, 50
    out = args.out if args.out is not None or args.quick else RESULTS
    args.guard_names = list(dict.fromkeys(g for g in args.guards.split(",") if g)) or ["mmssl"]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.backends = [b for b in args.backends.split(",") if b]
    endpoints = [e for e in args.endpoints.split(",") if e]
    torch.set_num_threads(1)

    batch = twin_like()
    splits = make_splits(batch, seed=0)
    test = apply_faults(splits.test, training_spec(splits.test), seed=1)
    bodies = npz_bodies(test, 64)
    token = secrets.token_hex(32)
    headers = {"authorization": f"Bearer {token}"}
    env = {"python": platform.python_version(), "torch": torch.__version__, "mmguard": mmguard.__version__,
           "onnxruntime": __import__("onnxruntime").__version__, "httpx": httpx.__version__,
           "uvicorn": __import__("uvicorn").__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
           "server_threads": args.server_threads, "concurrency": args.concurrency, "duration_s": args.duration,
           "warmup_s": args.warmup, "batch_wait_ms": args.batch_wait_ms, "body_bytes": len(bodies[0]),
           "data": f"synthetic twin-shaped: camera {IMAGE} float32 + kinematics ({KINEMATICS},), batch 1, NPZ",
           "uvicorn_http_loop": server_stack(), "uptime_before": uptime(),
           "load_before": [round(v, 2) for v in os.getloadavg()]}
    print(f"# {env['uptime_before']}", flush=True)
    rows: list[dict[str, Any]] = []
    profile: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="mmguard-serve-load-"))
    try:
        token_file = tmp / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        guards: dict[str, tuple[Guard, Path, Path | None]] = {}
        for name in args.guard_names:
            t0 = time.perf_counter()
            guard = fit_quick(name, splits)
            guard.save(tmp / name)
            onnx_path = export_onnx(guard, tmp / f"{name}.onnx") if "onnx" in args.backends else None
            guards[name] = (guard, tmp / name, onnx_path)
            if args.breakdown_reps > 0:
                onnx = None if onnx_path is None else OnnxGuard(onnx_path, threads=1)
                profile[name] = breakdown(guard, onnx, bodies[0], test.select(slice(0, 1)), args.breakdown_reps)
            print(f"# {name}: fitted and exported in {time.perf_counter() - t0:.1f} s; in-process ms per batch-1 "
                  f"step: {profile.get(name)}", flush=True)
        for name, backend, workers in configurations(args):
            guard, guard_dir, onnx_path = guards[name]
            server = Server(guard_dir, workers=workers, backend=backend,
                            onnx_model=onnx_path if backend == "onnx" else None, token_file=token_file,
                            threads=args.server_threads, batch_wait_ms=args.batch_wait_ms,
                            log=tmp / f"server-{name}-{backend}-{workers}.log")
            try:
                ready_s = server.wait_ready(headers)
                for endpoint in endpoints:
                    if endpoint == "/v1/transform" and not guard.corrects:
                        continue
                    row = {"guard": name, "backend": backend, "workers": workers, "ready_s": round(ready_s, 1),
                           **run_phase(server, endpoint, bodies, headers, list(guard.names), args, workers)}
                    row["target"] = verdict(row, args.duration)
                    rows.append(row)
                    print(f"{name} {backend} w{workers} {endpoint}: {row['requests_per_s']:.0f} req/s, p50 "
                          f"{row['p50_ms']} p90 {row['p90_ms']} p99 {row['p99_ms']} ms, errors {row['errors']}, "
                          f"RSS {row['rss_mb_start']} -> {row['rss_mb_end']} MiB, CPU ms/req client "
                          f"{row['client_cpu_ms_per_request']} server {row['server_cpu_ms_per_request']}"
                          + (f", server view {row['server_metrics']}" if "server_metrics" in row else ""),
                          flush=True)
            finally:
                rc = server.stop()
            for r in rows:
                if (r["guard"], r["backend"], r["workers"]) == (name, backend, workers):
                    r["server_exit_code"] = rc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    env["uptime_after"] = uptime()
    env["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(f"# {env['uptime_after']}")
    print()
    print("| guard | backend | workers | endpoint | req/s | p50 ms | p90 ms | p99 ms | errors | RSS MiB start → end "
          "(max) | CPU ms/req client / server |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['guard']} | {r['backend']} | {r['workers']} | {r['endpoint']} | {r['requests_per_s']:,.0f} | "
              f"{r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['errors']} | {r['rss_mb_start']:.0f} → "
              f"{r['rss_mb_end']:.0f} ({r['rss_mb_max']:.0f}) | {r['client_cpu_ms_per_request']:.2f} / "
              f"{r['server_cpu_ms_per_request']:.2f} |")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"env": env, "target": TARGET, "rows": rows, "in_process_ms": profile},
                                  indent=1) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
