"""EMMA Experiment II (thesis section 6.3) under an honest protocol, for any M >= 2 modalities.

Protocol (decisions documented in docs/emma.md):

1. Split (thesis table 6.1 for HTRU2), standardise with train statistics (section 6.1).
2. Corrupt each split separately with the schedule of section 6.3.1 — ``clean_fraction``
   clean, the rest split evenly into "only modality i corrupted" — Gaussian sigma on
   standardised data. Each seed draws its own corruption (its own *stream*); the draw is
   fixed for the run (the thesis corrupts each subset once).
3. Per seed: DAEs (clean train), base-model (clean train, early stopping on clean val
   loss), model-without (base fine-tuned on the corrupted mix, early stopping on corrupted
   val loss), and model-with for every grid configuration (EMMA + base weights, eq. 5.10,
   early stopping on corrupted val *task* loss). All configurations × seeds train as one
   batched ensemble.
4. Thresholds (binary tasks) are chosen per member on the corrupted validation mix, by
   ROC distance (thesis) and by F1-max. Multi-class tasks use argmax and macro F1.
5. The configuration is **selected on validation**: mean over seeds of the validation F1
   weighted by the condition proportions (the thesis ranked by weighted F1 on *test*).
6. The test split is evaluated once for the report: per-condition F1 (mean ± std over
   seeds), the severity sweep of each modality (sigma 0 → 3, six times the training
   noise), and the total-energy experiment (all modalities corrupted).
   ``oracle_test_selected`` additionally shows what ranking on test (the thesis's
   procedure) would have reported — labelled optimistic, never used for any choice.

Device (``cfg.device``, docs/devices.md): the stream dicts the stages train on are copied to the
device once (a resampled training draw is copied into them in place); every model is initialised on
the CPU and moved there. Evaluation streams stay on the CPU: :func:`~mmguard.emma.training.predict`
moves each chunk to the model and its outputs back, and every metric is computed on the CPU. EMMA
always computes in float32.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.devices import resolve_device
from mmguard.emma.data import num_classes_of, schedule_spec, to_streams
from mmguard.emma.losses import class_weights
from mmguard.emma.network import EmmaNetwork
from mmguard.emma.training import (
    AnnealSettings,
    EmmaHyper,
    MLPClassifier,
    StageSettings,
    build_emma,
    copy_members,
    mlp_sizes,
    module_device,
    predict,
    train_classifier,
    train_daes,
    train_with,
)
from mmguard.errors import DataError
from mmguard.eval.metrics import binary_f1, macro_f1, select_thresholds
from mmguard.eval.stats import mean_std
from mmguard.experiments.emma.config import EmmaRunConfig
from mmguard.faults import apply_faults, single_fault_spec
from mmguard.faults.rng import derive_seed
from mmguard.train.ensemble import EnsembleMLP

THESIS_TABLE_6_2 = {
    "base": {"clean": 0.8830, "ip_noisy": 0.6441, "dm_noisy": 0.6569},
    "without": {"clean": 0.8671, "ip_noisy": 0.7097, "dm_noisy": 0.7683},
    "with": {"clean": 0.8881, "ip_noisy": 0.7333, "dm_noisy": 0.8077},
}
THESIS_CODE_RUN = {  # one run of the thesis's own code on this machine kind (issue #3)
    "without": {"clean": 0.8693, "ip_noisy": 0.6747, "dm_noisy": 0.7975},
    "with": {"clean": 0.8185, "ip_noisy": 0.5871, "dm_noisy": 0.7374},
}

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------- data
def condition_names(names: tuple[str, ...]) -> list[str]:
    return ["clean", *[f"{n}_noisy" for n in names]]


def condition_subsets(mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """Boolean (S, N) subsets: -1 clean, i = only modality i corrupted."""
    n_bad = mask.sum(-1)
    out = {-1: n_bad == 0}
    for i in range(mask.shape[-1]):
        out[i] = mask[..., i] & (n_bad == 1)
    return out


def load_splits(cfg: EmmaRunConfig) -> Splits:
    from mmguard.data.registry import load_dataset

    batch = load_dataset(cfg.dataset, data_dir=cfg.data_dir, mapping=cfg.mapping, seed=cfg.split_seed)
    if batch.num_modalities < 2:
        raise DataError(
            f"EMMA needs at least 2 modalities, dataset {cfg.dataset!r} has {batch.num_modalities}"
        )
    num_classes_of(batch)
    batch.check_finite(cfg.dataset)
    splits = stratified_three_way(batch, train_fraction=0.67, seed=cfg.split_seed)
    return splits.standardize()


# ---------------------------------------------------------------------------- scoring
@dataclass
class Scored:
    """Validation/test outputs of one model family (G members)."""

    val: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    member_stream: torch.Tensor
    thresholds: dict[str, torch.Tensor] = field(default_factory=dict)


def binary_scores(logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1)


def fit_thresholds(scored: Scored, val: dict[str, torch.Tensor], rules: list[str]) -> None:
    """Per-member thresholds on the corrupted validation mix (binary tasks only)."""
    s = binary_scores(scored.val["logits"])
    for rule in rules:  # every stream holds the same validation split, so labels are val["y"][0]
        scored.thresholds[rule] = select_thresholds(s, val["y"][0], rule)  # type: ignore[arg-type]


def f1_by_condition(
    logits: torch.Tensor,
    y: torch.Tensor,
    subsets: dict[int, torch.Tensor],
    member_stream: torch.Tensor,
    num_classes: int,
    threshold: torch.Tensor | None,
) -> dict[int, torch.Tensor]:
    out = {}
    for c, sub in subsets.items():
        member_sub = sub[member_stream]
        if num_classes == 2:
            out[c] = binary_f1(binary_scores(logits), y, threshold, subset=member_sub)
        else:
            out[c] = macro_f1(logits, y, num_classes, subset=member_sub)
    return out


def f1_all(
    logits: torch.Tensor, y: torch.Tensor, num_classes: int, threshold: torch.Tensor | None
) -> torch.Tensor:
    if num_classes == 2:
        return binary_f1(binary_scores(logits), y, threshold)
    return macro_f1(logits, y, num_classes)


# ---------------------------------------------------------------------------- the run
class EmmaExperiment:
    """Runs the whole protocol; :meth:`run` returns (metrics, models, plots-data)."""

    def __init__(
        self,
        cfg: EmmaRunConfig,
        splits: Splits | None = None,
        log: Progress | None = None,
        epoch_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.log = log or (lambda msg: None)
        self.epoch_progress = epoch_progress
        self.splits = splits if splits is not None else load_splits(cfg)
        self.names = self.splits.train.names
        self.m = len(self.names)
        self.k = num_classes_of(self.splits.train)
        self.seeds = list(cfg.seeds)
        self.s = len(self.seeds)
        self.conditions = condition_names(self.names)
        self.models: dict[str, torch.nn.Module] = {}
        self.timing: dict[str, float] = {}
        self.device = resolve_device(cfg.device)

    # -- corruption
    def corrupt(self, batch: MultimodalBatch, split: str, epoch: int = 0) -> list[MultimodalBatch]:
        """Per seed, the section 6.3.1 schedule on ``batch``.

        Epoch 0 is the thesis's single draw. With ``sigma_range`` (training split only) each
        corrupted sample gets its own sigma ~ U[lo, hi]: the unit-sigma noise of the schedule
        is rescaled per sample, so the mask and codes are those of the schedule.
        """
        ranged = self.cfg.sigma_range is not None and split == "train"
        sigma = 1.0 if ranged else self.cfg.sigma
        spec = schedule_spec(self.names, sigma, self.cfg.clean_fraction, self.cfg.train_fault)
        tag = ("emma", split) if epoch == 0 else ("emma", split, epoch)
        out = []
        for seed in self.seeds:
            faulty = apply_faults(batch, spec, seed=derive_seed(seed, *tag))
            if ranged:
                lo, hi = self.cfg.sigma_range  # type: ignore[misc]
                g = torch.Generator().manual_seed(derive_seed(seed, "sigma-range", *tag))
                scale = lo + (hi - lo) * torch.rand(len(batch), generator=g)
                faulty = faulty.with_modalities({
                    n: batch.modalities[n] + scale.view(-1, *([1] * (batch.modalities[n].ndim - 1)))
                    * (faulty.modalities[n] - batch.modalities[n]) for n in batch.names
                })
            out.append(faulty)
        return out

    def refresh_train(self, epoch: int) -> None:
        """A new training corruption draw for ``epoch`` (``train_noise: resampled``), in place."""
        # epoch 1 restores the initial draw, so every stage sees the same sequence of draws
        fresh = to_streams(self.corrupt(self.splits.train, "train", 0 if epoch <= 1 else epoch))
        for k, v in fresh.items():
            self.noisy["train"][k].copy_(v)
            if self.train_noisy["train"][k] is not self.noisy["train"][k]:
                self.train_noisy["train"][k].copy_(v)

    def _refresh(self):
        return self.refresh_train if self.cfg.train_noise == "resampled" else None

    def prepare(self) -> None:
        sp = self.splits
        self.clean = {name: to_streams([getattr(sp, name)]) for name in ("train", "val", "test")}
        self.noisy = {
            name: to_streams(self.corrupt(getattr(sp, name), name)) for name in ("train", "val", "test")
        }
        # the streams training reads, on the device (the same tensors on the CPU); evaluation reads the CPU ones
        self.train_clean = {n: self._on_device(self.clean[n]) for n in ("train", "val")}
        self.train_noisy = {n: self._on_device(self.noisy[n]) for n in ("train", "val")}
        self.weights = class_weights(sp.train.target, self.k).to(self.device)
        self.seed_stream = torch.arange(self.s)

    def _on_device(self, streams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in streams.items()}

    def _expand_clean(self, split: str, source: dict[str, dict[str, torch.Tensor]] | None = None
                      ) -> dict[str, torch.Tensor]:
        streams = (self.clean if source is None else source)[split]
        return {k: v.expand(self.s, *v.shape[1:]) for k, v in streams.items()}

    def _progress(self, stage: str):
        """Per-epoch callback for the training loop: reports (stage, epoch, total epochs)."""
        if self.epoch_progress is None:
            return None
        report, total = self.epoch_progress, self.cfg.epochs
        return lambda epoch, val: report(stage, epoch, total)

    def settings(self) -> StageSettings:
        return StageSettings(epochs=self.cfg.epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr)

    # -- stages
    def train_stage1(self) -> None:
        t0 = time.perf_counter()
        self.log("stage 1: denoising autoencoders (potential energy, chapter 4)")
        self.daes = train_daes(
            self.train_clean["train"],
            self.seeds,
            self.m,
            hidden=self.cfg.dae_hidden,
            epochs=self.cfg.dae_epochs,
            batch_size=self.cfg.dae_batch_size,
            sigma=self.cfg.dae_sigma,
        )
        self.timing["daes_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.log("base-model and reference MLPs on clean data")
        # one ensemble: block 0 = base-model (all modalities), block 1 + i = reference without modality i
        sizes = [s.size for s in self.splits.train.specs]
        offsets = np.cumsum([0, *sizes])
        masks = [torch.ones(int(offsets[-1]))]
        for i in range(self.m):
            mk = torch.ones(int(offsets[-1]))
            mk[int(offsets[i]) : int(offsets[i + 1])] = 0.0
            masks.append(mk)
        blocks = len(masks)
        member_seeds = [
            s if b == 0 else derive_seed(s, "ref", b - 1) for b in range(blocks) for s in self.seeds
        ]
        input_mask = torch.stack(masks).repeat_interleave(self.s, dim=0)
        joint = MLPClassifier(
            EnsembleMLP(member_seeds, mlp_sizes(int(offsets[-1]), self.cfg.mmn_hidden, self.k)),
            self.m,
            input_mask=input_mask,
        ).to(self.device)
        stream = self.seed_stream.repeat(blocks)
        train_classifier(
            joint,
            self._expand_clean("train", self.train_clean),
            self._expand_clean("val", self.train_clean),
            member_stream=stream,
            stream_seeds=self.seeds,
            weights=self.weights,
            settings=self.settings(),
            progress=self._progress("base-model + references"),
        )
        self.models["base"] = _take(joint, torch.arange(self.s))
        self.refs = {i: _take(joint, torch.arange((1 + i) * self.s, (2 + i) * self.s)) for i in range(self.m)}
        self.timing["base_and_references_s"] = time.perf_counter() - t0

    def train_without(self) -> None:
        t0 = time.perf_counter()
        self.log("model-without: base fine-tuned on the corrupted mix")
        base = self.models["base"]
        without = MLPClassifier(EnsembleMLP(self.seeds, base.mlp.sizes), self.m).to(self.device)
        copy_members(without.mlp, base.mlp, self.seed_stream)
        train_classifier(
            without,
            self.train_noisy["train"],
            self.train_noisy["val"],
            member_stream=self.seed_stream,
            stream_seeds=self.seeds,
            weights=self.weights,
            settings=self.settings(),
            refresh=self._refresh(),
            progress=self._progress("model-without"),
        )
        self.models["without"] = without
        self.timing["without_s"] = time.perf_counter() - t0

    def grid_members(self) -> tuple[list[tuple[float, float, float]], torch.Tensor, EmmaHyper]:
        g = self.cfg.grid
        configs = list(itertools.product(g.rho, g.lambda_c, g.lambda_e))
        c = len(configs)
        member_seed = torch.arange(self.s).repeat(c)  # member index = config * S + seed
        cfg_t = torch.tensor(configs, dtype=torch.float32).repeat_interleave(self.s, dim=0)
        return configs, member_seed, EmmaHyper(rho=cfg_t[:, 0], lambda_c=cfg_t[:, 1], lambda_e=cfg_t[:, 2])

    def train_with_grid(self, anneal: bool) -> tuple[EmmaNetwork, list, torch.Tensor, EmmaHyper]:
        t0 = time.perf_counter()
        configs, member_seed, hyper = self.grid_members()
        self.log(
            f"model-with: {len(configs)} configurations x {self.s} seeds = {len(member_seed)} members"
            f"{' (annealed)' if anneal else ''}"
        )
        net = build_emma(self.daes, self.models["base"], member_seed, hyper.rho, neutral_start=anneal)
        anneal_settings = None
        if anneal:
            anneal_settings = AnnealSettings(
                rho_start=self.cfg.anneal_rho_start,
                cool_epochs=self.cfg.anneal_cool_epochs,
                patience=self.cfg.anneal_patience,
            )
        train_with(
            net,
            self.train_noisy["train"],
            self.train_noisy["val"],
            member_stream=member_seed,
            stream_seeds=self.seeds,
            weights=self.weights,
            hyper=hyper,
            settings=self.settings(),
            anneal=anneal_settings,
            refresh=self._refresh(),
            progress=self._progress("model-with (annealed)" if anneal else "model-with"),
        )
        self.timing["with_annealed_s" if anneal else "with_s"] = time.perf_counter() - t0
        return net, configs, member_seed, hyper

    # -- evaluation
    def score(
        self,
        model: torch.nn.Module,
        member_stream: torch.Tensor,
        m: int | None = None,
        keep: list[int] | None = None,
    ) -> Scored:
        def sub(d):
            if keep is None:
                return d
            return {**{f"m{a}": d[f"m{j}"] for a, j in enumerate(keep)}, "y": d["y"], "mask": d["mask"]}

        mm = m or self.m
        sc = Scored(
            val=predict(model, sub(self.noisy["val"]), member_stream, mm),
            test=predict(model, sub(self.noisy["test"]), member_stream, mm),
            member_stream=member_stream,
        )
        if self.k == 2:
            fit_thresholds(sc, self.noisy["val"], self.cfg.threshold_rules)
        return sc

    def condition_table(self, scored: Scored, split: str, rule: str) -> dict[str, torch.Tensor]:
        data = self.noisy[split]
        logits = (scored.val if split == "val" else scored.test)["logits"]
        thr = scored.thresholds.get(rule) if self.k == 2 else None
        f1 = f1_by_condition(
            logits, data["y"][0], condition_subsets(data["mask"]), scored.member_stream, self.k, thr
        )
        return {("clean" if c < 0 else f"{self.names[c]}_noisy"): v for c, v in f1.items()}

    def condition_weights(self) -> dict[str, float]:
        w = {"clean": self.cfg.clean_fraction}
        for n in self.names:
            w[f"{n}_noisy"] = (1.0 - self.cfg.clean_fraction) / self.m
        return w

    def select(self, scored: Scored, configs: list, rule: str) -> dict[str, Any]:
        """Choose the configuration by validation weighted F1, averaged over seeds."""
        val = self.condition_table(scored, "val", rule)
        w = self.condition_weights()
        weighted = sum(w[c] * val[c] for c in val) / sum(w.values())  # (G,)
        per_cfg = weighted.reshape(len(configs), self.s)
        mean = per_cfg.mean(1)
        best = int(torch.argmax(mean))
        test = self.condition_table(scored, "test", rule)
        test_w = (sum(w[c] * test[c] for c in test) / sum(w.values())).reshape(len(configs), self.s).mean(1)
        oracle = int(torch.argmax(test_w))
        return {
            "best": best,
            "val_weighted": per_cfg,
            "val": val,
            "test": test,
            "oracle": oracle,
            "test_weighted": test_w,
        }

    def sweep(
        self, family: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]], rule: str
    ) -> dict[str, Any]:
        """Figures 6.8-6.10: one modality corrupted at test time, sigma swept."""
        test = self.splits.test
        out: dict[str, Any] = {"sigma": list(self.cfg.sweep_sigmas)}
        for i, name in enumerate(self.names):
            f1s: dict[str, list] = {k: [] for k in family}
            betas: list[list[list[float]]] = []
            for sigma in self.cfg.sweep_sigmas:
                streams = self._swept_streams(test, [name], sigma, tag=f"sweep-{name}")
                for key, (model, ms, thr) in family.items():
                    res = predict(model, streams, ms, self.m)
                    f1s[key].append(mean_std(f1_all(res["logits"], streams["y"][0], self.k, thr)))
                    if key == "with":
                        betas.append([mean_std(res["beta"][..., j].mean(1)) for j in range(self.m)])
            ref = self.refs[i]
            ref_res = predict(ref, self._expand_clean("test"), self.seed_stream, self.m)
            ref_thr = None
            if self.k == 2:
                ref_val = predict(ref, self._expand_clean("val"), self.seed_stream, self.m)
                ref_thr = select_thresholds(binary_scores(ref_val["logits"]), self.clean["val"]["y"][0], rule)  # type: ignore[arg-type]
            out[name] = {
                "f1": f1s,
                "beta": {self.names[j]: [b[j] for b in betas] for j in range(self.m)},
                "reference_other_modalities": mean_std(
                    f1_all(ref_res["logits"], self.clean["test"]["y"][0], self.k, ref_thr)
                ),
            }
        return out

    def _swept_streams(self, batch: MultimodalBatch, names: list[str], sigma: float, tag: str):
        outs = []
        for seed in self.seeds:
            b = batch
            if sigma > 0:
                for n in names:
                    b = apply_faults(
                        b,
                        single_fault_spec(n, "gaussian_noise", {"sigma": sigma}, rate=1.0),
                        seed=derive_seed(seed, tag, n, sigma),
                    )
            outs.append(b)
        return to_streams(outs)

    def total_energy(self, model: EmmaNetwork, ms: torch.Tensor, thr: torch.Tensor | None) -> dict[str, Any]:
        """Figure 6.7: every modality corrupted; mean total energy vs F1 along sigma."""
        energies, f1s = [], []
        for sigma in self.cfg.sweep_sigmas:
            streams = self._swept_streams(self.splits.test, list(self.names), sigma, tag="total-energy")
            res = predict(model, streams, ms, self.m)
            energies.append(res["total_energy"].mean(1))  # (S,)
            f1s.append(f1_all(res["logits"], streams["y"][0], self.k, thr))
        e = torch.stack(energies)  # (sigmas, S)
        f = torch.stack(f1s)
        rho_mean, p_mean = _spearman(e.mean(1).numpy(), f.mean(1).numpy())
        per_seed = [_spearman(e[:, j].numpy(), f[:, j].numpy())[0] for j in range(e.shape[1])]
        defined = [r for r in per_seed if r is not None]
        return {
            "sigma": list(self.cfg.sweep_sigmas),
            "mean_total_energy": [mean_std(x) for x in e],
            "f1": [mean_std(x) for x in f],
            "spearman": _finite(rho_mean),
            "spearman_p": _finite(p_mean),
            "spearman_per_seed": mean_std(defined) if defined else None,
            "spearman_undefined_seeds": len(per_seed) - len(defined),
        }

    @torch.no_grad()
    def zero_input_percentile(self, model: torch.nn.Module) -> dict[str, list[float]]:
        """Where an all-zero (zero-filled, 'missing') modality's shifted potential falls among clean
        test samples: the fraction of clean test samples with a lower Psi, per modality, mean ± std
        over seeds. Near 1 means the potential flags a missing modality; near 0.5 means it cannot.
        """
        net = model.net if isinstance(model, _Subset) else model
        dev = module_device(net)
        xs = [self.clean["test"][k].to(dev).expand(self.s, *self.clean["test"][k].shape[1:]) for k in
              [f"m{i}" for i in range(self.m)]]
        clean = net.attend(xs).psi.cpu()  # (S, N, M)
        zero = net.attend([torch.zeros_like(x[:, :1]) for x in xs]).psi.cpu()  # (S, 1, M)
        frac = (clean < zero).double().mean(1)  # (S, M)
        return {n: mean_std(frac[:, i]) for i, n in enumerate(self.names)}

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.perf_counter()
        self.prepare()
        self.train_stage1()
        self.train_without()
        variants = {"off": [False], "on": [True], "compare": [False, True]}[cfg.anneal]
        rules = cfg.threshold_rules if self.k == 2 else ["argmax"]
        sel_rule = cfg.selection_rule if self.k == 2 else "argmax"
        base_sc = self.score(self.models["base"], self.seed_stream)
        without_sc = self.score(self.models["without"], self.seed_stream)

        metrics: dict[str, Any] = {
            "seeds": self.seeds,
            "modalities": list(self.names),
            "num_classes": self.k,
            "conditions": self.conditions,
            "selection_rule": sel_rule,
            "threshold_rules": rules,
        }
        metrics["f1_at"] = {}
        for variant in variants:
            net, configs, member_seed, hyper = self.train_with_grid(anneal=variant)
            with_sc = self.score(net, member_seed)
            sel = self.select(with_sc, configs, sel_rule)
            best = sel["best"]
            members = torch.arange(best * self.s, (best + 1) * self.s)
            key = "with_annealed" if variant else "with"
            self.models[key] = net
            self.selected_members = getattr(self, "selected_members", {})
            self.selected_members[key] = members
            for rule in rules:
                table = metrics["f1_at"].setdefault(rule, {})
                for name, sc in (("base", base_sc), ("without", without_sc)):
                    test = self.condition_table(sc, "test", rule)
                    table[name] = {c: mean_std(v) for c, v in test.items()}
                test = self.condition_table(with_sc, "test", rule)
                table[key] = {c: mean_std(v[members]) for c, v in test.items()}
            rho, lc, le = configs[best]
            cap = net.attention.capacity().detach().cpu()
            metrics.setdefault("selected", {})[key] = {
                "rho": rho,
                "lambda_c": lc,
                "lambda_e": le,
                "criterion": f"validation weighted F1 ({sel_rule})",
                "val_weighted_f1": mean_std(sel["val_weighted"][best]),
                "capacity": mean_std(cap[members]),
                "g_a": mean_std(net.attention.g_a.detach().cpu()[members]),
                "b_a": mean_std(net.attention.b_a.detach().cpu()[members]),
            }
            orc = sel["oracle"]
            om = torch.arange(orc * self.s, (orc + 1) * self.s)
            metrics.setdefault("oracle_test_selected", {})[key] = {
                "note": "configuration ranked on TEST (the thesis's procedure) - optimistic, comparison only",
                "rho": configs[orc][0],
                "lambda_c": configs[orc][1],
                "lambda_e": configs[orc][2],
                "f1": {c: mean_std(v[om]) for c, v in sel["test"].items()},
            }
            metrics.setdefault("grid", {})[key] = [
                {
                    "rho": c[0],
                    "lambda_c": c[1],
                    "lambda_e": c[2],
                    "val_weighted_f1": mean_std(sel["val_weighted"][i]),
                    "val": {cn: mean_std(v[i * self.s : (i + 1) * self.s]) for cn, v in sel["val"].items()},
                    "capacity": mean_std(cap[i * self.s : (i + 1) * self.s]),
                }
                for i, c in enumerate(configs)
            ]
            if not variant:
                self.with_scored = with_sc
                self.with_member_seed = member_seed
        metrics["f1"] = metrics["f1_at"][sel_rule]

        # robustness generalisation and total energy, with the selected plain model-with
        members = self.selected_members["with"]
        net = self.models["with"]

        def thr(sc: Scored, ms: torch.Tensor) -> torch.Tensor | None:
            return sc.thresholds[sel_rule][ms] if self.k == 2 else None

        family = {
            "base": (self.models["base"], self.seed_stream, thr(base_sc, self.seed_stream)),
            "without": (self.models["without"], self.seed_stream, thr(without_sc, self.seed_stream)),
            "with": (net, members, thr(self.with_scored, members)),
        }
        # predict() indexes streams by member_stream; the selected members read seed streams 0..S-1
        family["with"] = (_Subset(net, members), self.seed_stream, family["with"][2])
        self.log("robustness sweeps and total energy")
        t0 = time.perf_counter()
        metrics["sweep"] = self.sweep(family, sel_rule)
        metrics["total_energy"] = self.total_energy(
            _Subset(net, members), self.seed_stream, family["with"][2]
        )
        metrics["zero_input_potential_percentile"] = self.zero_input_percentile(family["with"][0])
        self.timing["evaluation_s"] = time.perf_counter() - t0
        self.timing["total_s"] = time.perf_counter() - t_start
        metrics["timing"] = dict(self.timing)
        metrics["thesis"] = {"table_6_2": THESIS_TABLE_6_2, "thesis_code_run": THESIS_CODE_RUN}
        metrics["data"] = {
            "dataset": cfg.dataset,
            "sizes": self.splits.sizes(),
            "positives": {
                k: int((getattr(self.splits, k).target == 1).sum()) for k in ("train", "val", "test")
            }
            if self.k == 2
            else None,
        }
        self.thresholds = {
            "base": base_sc.thresholds,
            "without": without_sc.thresholds,
            "with": {r: t[members] for r, t in self.with_scored.thresholds.items()},
        }
        return metrics


def _take(model: MLPClassifier, index: torch.Tensor) -> MLPClassifier:
    """Members ``index`` of an MLPClassifier as a new one (input mask kept), on ``model``'s device."""
    mask = None if model.input_mask is None else model.input_mask.cpu()[index].clone()
    if mask is not None and bool((mask == 1).all()):
        mask = None
    out = MLPClassifier(EnsembleMLP([0] * int(index.numel()), model.mlp.sizes), model.num_modalities, mask)
    copy_members(out.mlp, model.mlp, index)
    return out.to(module_device(model))


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """Spearman correlation and p-value; (None, None) when either input is constant (undefined)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    r, p = spearmanr(a, b)
    return _finite(r), _finite(p)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


class _Subset(torch.nn.Module):
    """View of members ``index`` of an EMMA ensemble as a smaller ensemble (for evaluation)."""

    def __init__(self, net: EmmaNetwork, index: torch.Tensor) -> None:
        super().__init__()
        self.net = extract_members(net, index)

    def forward(self, xs):
        return self.net(xs)


def extract_members(net: EmmaNetwork, index: torch.Tensor) -> EmmaNetwork:
    """A new EmmaNetwork holding members ``index`` of ``net`` (weights copied), on ``net``'s device."""
    from mmguard.emma.attention import EmmaAttention
    from mmguard.emma.network import ConcatPredictor

    g = int(index.numel())
    dev = module_device(net)
    index = index.to(dev)
    att = EmmaAttention(g, net.attention.num_modalities, net.attention.rho[index].cpu())
    att.load_state_dict(
        {k: v[index] for k, v in net.attention.state_dict().items() if k != "off_diagonal"}
        | {"off_diagonal": net.attention.off_diagonal}
    )
    mlp = EnsembleMLP([0] * g, net.predictor.mlp.sizes)
    copy_members(mlp, net.predictor.mlp, index)
    daes = [d.select(index) for d in net.daes]
    return EmmaNetwork(daes, att, ConcatPredictor(mlp)).to(dev)
