"""The full Experiment II protocol on HTRU2 (about 6 minutes on one thread).

Marked ``slow``: `make test` and CI do not select it. Run it with
``MMGUARD_DATA_DIR=../shared/data .venv/bin/pytest -m slow tests/experiments/test_emma_full_protocol.py``.
Its published numbers are in docs/results/emma-htru2.md.
"""

from __future__ import annotations

import time

import pytest

from mmguard.experiments.emma.config import EmmaRunConfig
from mmguard.experiments.emma.run import run_emma


@pytest.mark.slow
def test_full_protocol_runs_within_the_time_budget(tmp_path):
    cfg = EmmaRunConfig(threads=1, anneal="compare")  # 125 configurations x 5 seeds, 35 epochs, batch 32
    t0 = time.perf_counter()
    metrics = run_emma(cfg, tmp_path / "run", log=lambda m: None)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20 * 60, f"the full protocol took {elapsed:.0f} s (target: under 20 minutes)"
    assert len(metrics["seeds"]) >= 5
    assert len(metrics["grid"]["with"]) == 125 and len(metrics["grid"]["with_annealed"]) == 125
    for model in ("base", "without", "with", "with_annealed"):
        for cond in ("clean", "ip_noisy", "dm_noisy"):
            mean, std = metrics["f1"][model][cond]
            assert 0.0 < mean <= 1.0 and std >= 0.0
    assert "chapter4" in metrics and (tmp_path / "run" / "manifold_fields.png").is_file()
