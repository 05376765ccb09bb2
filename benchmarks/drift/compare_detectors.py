"""Compare mmguard's drift detector with frouros's MMD detector on the gas sensor array.

Usage (frouros is *not* a dependency of mmguard; install it into a scratch directory)::

    pip install --target /tmp/frpkg frouros==0.9.0 tqdm --no-deps
    PYTHONPATH=/tmp/frpkg python benchmarks/drift/compare_detectors.py --data $MMGUARD_DATA_DIR

Measures, in one process on the same windows (batches 1–2 as reference, one sensor = 8 features):
the time of one test of 100 samples against 300 reference samples — frouros: MMD plus a
permutation test (``--permutations``, its way of getting a p-value); mmguard: the statistic
against a threshold calibrated once at fit time (the fit time is reported separately) — and
whether the two agree on drifted (batch 3) and in-distribution (held-out batches 1–2) windows.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mmguard.adapt.drift import DriftConfig, DriftDetector
from mmguard.data import load_dataset
from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="folder holding gas-drift/")
    ap.add_argument("--permutations", type=int, default=500)
    ap.add_argument("--windows", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    b = load_dataset(f"csv:{args.data}/gas-drift/gas_drift_b1-6.csv", mapping=args.data / "gas-drift/gas_drift.yaml")
    one = MultimodalBatch(modalities={"s01": b.modalities["s01"]}, specs=(b.spec("s01"),), target=b.target,
                          meta=b.meta)
    g = one.meta["batch"]
    idx = torch.nonzero(g <= 2).flatten()
    perm = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))]
    train, val, held = one.select(perm[:1000]), one.select(perm[1000:1300]), one.select(perm[1300:])
    st = Standardizer.fit(train)
    drifted = st.transform(one.select(torch.nonzero(g == 3).flatten()))
    t0 = time.perf_counter()
    det = DriftDetector.fit(st.transform(train), st.transform(val), DriftConfig(), seed=0)
    fit_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    sets = {"in-distribution": st.transform(held), "batch 3": drifted}
    ref = det.reference["s01"].double().numpy()
    sigma = float(det.sigma2[0]) ** 0.5

    def ours(x):
        return det.test(x).drifted

    rows = {}
    try:
        from frouros.callbacks import PermutationTestDistanceBased
        from frouros.detectors.data_drift import MMD
        from frouros.utils.kernels import rbf_kernel

        fr = MMD(kernel=partial(rbf_kernel, sigma=sigma),
                 callbacks=[PermutationTestDistanceBased(num_permutations=args.permutations, random_state=0,
                                                         num_jobs=1)])
        fr.fit(X=ref)

        def theirs(x):
            _, logs = fr.compare(X=x.modalities["s01"].double().numpy())
            return logs["PermutationTestDistanceBased"]["p_value"] < det.config.alpha
    except ImportError:
        theirs = None
    for name, data in sets.items():
        starts = rng.integers(0, len(data) - 100, size=args.windows)
        for label, fn in (("mmguard", ours), ("frouros", theirs)):
            if fn is None:
                continue
            t1 = time.perf_counter()
            flags = [fn(data.select(slice(int(s), int(s) + 100))) for s in starts]
            rows[(label, name)] = ((time.perf_counter() - t1) / len(starts), float(np.mean(flags)))
    print(f"mmguard fit (2,000 null windows, calibrated once): {fit_s:.2f} s")
    for (label, name), (sec, share) in rows.items():
        print(f"{label:8s} {name:16s} {sec * 1e3:9.2f} ms per test, drifted on {share:.2f} of {args.windows} windows")
    if ("frouros", "batch 3") in rows:
        ratio = rows[("frouros", "batch 3")][0] / rows[("mmguard", "batch 3")][0]
        print(f"time per test, frouros ({args.permutations} permutations) / mmguard: {ratio:.0f}x")


if __name__ == "__main__":
    main()
