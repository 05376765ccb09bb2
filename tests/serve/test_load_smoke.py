"""benchmarks/serve_load.py end to end, as small as it goes: a real ``mmguard serve`` subprocess on a loopback
port, one configuration, one endpoint, one second of load (the measured run is documented in
benchmarks/README.md, "Service load test")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_load_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "serve_load.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--duration", "1",
                          "--warmup", "0.5", "--workers", "1", "--backends", "torch", "--endpoints", "/v1/score",
                          "--concurrency", "2", "--breakdown-reps", "5", "--out", str(out)],
                         cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert (row["guard"], row["backend"], row["workers"], row["endpoint"]) == ("mmssl", "torch", 1, "/v1/score")
    assert row["errors"] == 0 and row["ok"] == row["requests"] > 0 and row["requests_per_s"] > 0
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["rss_mb_start"] > 0 and row["rss_mb_end"] > 0 and row["server_exit_code"] in (0, -15)
    # the server counts a request once its answer is sent: the last ones in flight may be missing
    assert row["server_metrics"]["requests"] >= row["requests"] - 2 and row["server_metrics"]["guard_calls"] > 0
    assert set(data["in_process_ms"]["mmssl"]) >= {"npz_decode_and_checks", "torch_score", "torch_transform"}
    assert data["env"]["load_before"] and data["env"]["uptime_after"] and "| mmssl | torch | 1 |" in res.stdout
