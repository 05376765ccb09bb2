"""The design choices of the drift adaptation, measured on the development batches only.

Gas sensor array, trained on batches 1–2 (the split of ``mmguard bench --split-by batch
--train-groups 1,2 --id-test 0.15``, split seed 0), evaluated on the continuous stream
in-distribution part → batch 3 → batch 4 (batches 5–6 are never loaded). For model seeds 0..N-1
it prints the macro F1 on the in-distribution part and the mean over batches 3–4 for:

* model selection of the downstream model: validation loss vs validation macro F1 (``select_by``);
* the statistics adaptation: plain window statistics, one class-balanced step (the default),
  and two steps (re-predicting with the adapted statistics);
* the window: 128, 256, 512 samples;
* the model: plain vs batch normalisation, with and without ``stats``.

Usage: ``python benchmarks/drift/dev_choices.py --data $MMGUARD_DATA_DIR --seeds 3``
(docs/drift.md quotes its output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mmguard.adapt.drift import DriftDetector
from mmguard.adapt.stats import class_balanced_weights
from mmguard.data import load_dataset
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import make_splits
from mmguard.downstream import adaptive
from mmguard.downstream.adaptive import AdaptiveDownstream
from mmguard.downstream.model import DownstreamConfig, downstream_metric, fit_downstream
from mmguard.experiments.drift_eval import DriftSettings, build_streams


def two_step(model):
    """Class-balanced statistics with weights from the model re-run on the one-step statistics."""
    def fit(window, probs, prior):
        if probs is None or prior is None:
            return Standardizer.fit(window)
        first = Standardizer.fit(window, class_balanced_weights(probs, prior))
        again = torch.softmax(model.outputs(first.transform(window)), 1)
        return Standardizer.fit(window, class_balanced_weights(again, prior))
    return fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    b = load_dataset(f"csv:{args.data}/gas-drift/gas_drift_b1-6.csv", mapping=args.data / "gas-drift/gas_drift.yaml")
    sp = make_splits(b, split_by="batch", train_groups=[1, 2], test_groups=[3, 4], id_test_fraction=0.15, seed=0)
    st = Standardizer.fit(sp.train)
    train, val = st.transform(sp.train), st.transform(sp.val)
    det = DriftDetector.fit(train, val, seed=0)
    stream = build_streams(DriftSettings(group_key="batch", id_groups=[1, 2]), st.transform(sp.test), 0)["groups"]
    y = sp.test.target[stream.order]
    original = adaptive.window_standardizer

    def score(model, method="none", window=256, fit=None):
        adaptive.window_standardizer = fit or original
        try:
            pred = AdaptiveDownstream(model, method, window=window, monitor=det.monitor()).run(stream.batch, 25)
        finally:
            adaptive.window_standardizer = original
        f1 = {k: downstream_metric(pred[r], y[r], "multiclass")["score"] for k, r in stream.parts.items()}
        return f1["id"], (f1["batch=3"] + f1["batch=4"]) / 2

    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        models = {}
        for name, cfg in {"loss": DownstreamConfig(), "f1": DownstreamConfig(epochs=200, patience=20, select_by="f1"),
                          "f1+bn": DownstreamConfig(epochs=200, patience=20, select_by="f1", norm="batch")}.items():
            models[name], _ = fit_downstream(train, val, sp.train.target, sp.val.target, cfg, seed=seed)
        m = models["f1"]
        cases = {
            "select_by loss, none": score(models["loss"]),
            "select_by loss, stats": score(models["loss"], "stats"),
            "select_by f1, none": score(m),
            "stats, plain window statistics": score(m, "stats", fit=lambda w, p, q: Standardizer.fit(w)),
            "stats, one class-balanced step (default)": score(m, "stats"),
            "stats, two class-balanced steps": score(m, "stats", fit=two_step(m)),
            "stats, window 128": score(m, "stats", 128),
            "stats, window 512": score(m, "stats", 512),
            "BN model, none": score(models["f1+bn"]),
            "BN model, stats": score(models["f1+bn"], "stats"),
        }
        for k, v in cases.items():
            rows.setdefault(k, []).append(v)
        print(f"seed {seed} done", flush=True)
    print(f"{'option':45s} {'in-distr.':>10s} {'mean of batches 3-4':>22s}   per seed (3-4)")
    for k, vals in rows.items():
        ids, devs = [v[0] for v in vals], [v[1] for v in vals]
        print(f"{k:45s} {sum(ids) / len(ids):10.3f} {sum(devs) / len(devs):22.3f}   "
              + ", ".join(f"{d:.3f}" for d in devs))


if __name__ == "__main__":
    main()
