"""The full MMSSL protocol on a generated `arm` twin (about 45 minutes on one thread).

Marked ``slow``: `make test` and CI do not select it. Run it with
``.venv/bin/pytest -m slow tests/experiments/test_mmssl_full_protocol.py``.
Its published numbers (same settings, `arm --seed 1`) are in docs/results/mmssl-twin.md.
"""

from __future__ import annotations

import pytest

from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.experiments.mmssl.run import run_mmssl


@pytest.mark.slow
def test_full_protocol_on_the_arm_twin(tmp_path):
    from mmguard.twin.storage import generate

    data = generate("arm", 60, 100, tmp_path / "arm.h5", seed=1, workers=2)
    cfg = MmsslRunConfig(data=str(data), threads=1)  # 5 seeds, 30 + 40 epochs, sweeps and analyses
    metrics = run_mmssl(cfg, tmp_path / "run", log=lambda m: None)
    assert len(metrics["seeds"]) == 5
    for model in ("mmssl", "mmae", "dae"):
        for split in ("clean", "faulty"):
            assert metrics["errors"][model][split]["combined"][0] > 0
    # the corrector is a contraction, exactly and empirically
    c = metrics["contraction"]["mmssl"]
    assert c["upper_bound"][0] < 1.0 and c["empirical_max"][0] <= c["upper_bound"][0] + 1e-5
    # routing never touches clean samples the gate passes: oracle routing equals the MMAE on clean data
    assert metrics["errors"]["mmssl_oracle_routing"]["clean"] == metrics["errors"]["mmae"]["clean"]
    # correction helps on the trained fault mix (measured 0.658 +- 0.035 of the MMAE's error)
    assert metrics["ratios"]["faulty_mmssl_over_mmae"][0] < 1.0
    for name in ("errors.png", "families.png", "severity.png", "latent_tsne.png", "report.md"):
        assert (tmp_path / "run" / name).is_file()
