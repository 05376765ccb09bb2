"""`mmguard demo`: an honest end-to-end slice on the embedded default (no downloads).

First, the story mmguard exists for: on a small generated `arm` twin, a downstream model (phase
classification from camera + kinematics) is trained on clean data; `mmguard bench --downstream`
measures how much of its clean performance survives each fault family with no guard, with a
modality-dropout peer, and with the DAE and MMSSL guards in front (quick settings, one seed).
Then:

1. Data: the shared-latent synthetic toy (3 vector modalities of sizes 4, 6, 3, binary target,
   4,000 samples) — generated, nothing fetched.
2. Faults: the thesis schedule generalised to 3 modalities, plus a common-cause failure and
   fault types never used in training; per-modality corruption statistics; preview PNG.
3. EMMA: the full protocol (base / without / with, validation-only selection) in quick mode,
   then re-evaluation of the trained models under the unseen fault spec (`mmguard eval`).
4. Digital twin (generated first, for the story above): the `arm` workcell's default small set (20 x 50, camera +
   kinematics) with 2 workers, then its info and a preview PNG.
5. MMSSL on that twin (issue #5), quick mode: stage-1 MMAE, DAE baseline, compute block and
   ablations over 2 seeds; the comparison table (paper table 1 layout) and its plots.

Everything lands in ``--out`` (default ``demo_out``): summary.json, summary.md, the fault
preview and statistics, the EMMA run directory and the unseen-fault evaluation.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mmguard.cli.common import print_json

DEMO_DATASET = "toy?n=4000"

UNSEEN_SPEC = {
    "scenario": {
        "name": "unseen_faults_and_common_cause",
        "selection": "exclusive",
        "description": "fault types never seen in training, and a common-cause failure",
    },
    "faults": [
        {"modality": "m0", "type": "stuck_at", "params": {"value": 2.0}, "rate": 0.15},
        {"modality": "m1", "type": "quantization", "params": {"step": 1.0}, "rate": 0.15},
        {"modality": "m2", "type": "spikes", "params": {}, "rate": 0.15},
        {"modality": "m0", "type": "offset", "params": {"value": 3.0}, "rate": 0.15, "group": "heat"},
        {"modality": "m1", "type": "gain", "params": {"factor": 3.0}, "rate": 0.15, "group": "heat"},
    ],
}


def corruption_stats(clean, faulty) -> dict:
    """Per modality: corrupted fraction, samples per fault type, RMS error and SNR (dB) on corrupted rows."""
    import torch

    out = {}
    mask = faulty.mask_or_clean()
    codes = faulty.codes_or_clean()
    for j, name in enumerate(faulty.names):
        rows = mask[:, j]
        x0, x1 = clean.flat(name)[rows], faulty.flat(name)[rows]
        err = x1 - x0
        power_signal = float((x0**2).mean()) if rows.any() else 0.0
        power_err = float((err**2).mean()) if rows.any() else 0.0
        per_type = {
            faulty.fault_vocab[c]: int(((codes[:, j] == c) & rows).sum())
            for c in codes[rows, j].unique().tolist()
        }
        out[name] = {
            "corrupted_fraction": float(rows.float().mean()),
            "per_type": per_type,
            "rms_error": power_err**0.5,
            "snr_db": (
                10 * torch.log10(torch.tensor(power_signal / power_err)).item() if power_err > 0 else None
            ),
        }
    return out


def _twin_slice(out: Path, seed: int, log) -> dict:
    """Generate the `arm` twin's default small set (20 episodes x 50 steps), then info and preview."""
    import time

    from mmguard.twin.dataset import twin_info
    from mmguard.twin.preview import preview
    from mmguard.twin.storage import generate

    path = out / "twin" / "arm.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generate("arm", 20, 50, path, seed=seed, workers=2, force=True)
    elapsed = time.perf_counter() - t0
    preview(path, out / "twin" / "arm_preview.png", episode=0)
    info = twin_info(path)
    log(f"twin: 20 episodes x 50 steps of arm in {elapsed:.1f} s ({1000 / elapsed:.0f} frames/s)")
    return {"file": str(path.relative_to(out)), "seconds": elapsed, "frames_per_s": 1000 / elapsed,
            "info": info}


def _downstream_story(out: Path, twin: dict, seed: int, log) -> dict:
    """`mmguard bench --downstream phase --guards dae,mmssl --quick` on the demo twin (one seed)."""
    from mmguard.data import load_dataset
    from mmguard.data.splits import make_splits
    from mmguard.experiments.harness import BenchConfig, run_bench

    data = f"twin:{out / twin['file']}?tasks=phase"
    splits = make_splits(load_dataset(data), seed=seed)
    cfg = BenchConfig(data={"source": data}, guards=["dae", "mmssl"], seeds=[seed], downstream=["phase"],
                      severity_sweep=False, quick=True)
    metrics = run_bench(cfg, splits, out / "downstream", log=lambda m: log(f"downstream: {m}"))
    d = metrics["downstream"]["phase"]
    return {"task": "phase", "metric": "macro F1", "oracle_clean": d["scores"]["oracle"]["clean"],
            "retention": {g: {o: r["retention"][0] for o, r in rows.items()} for g, rows in d["retention"].items()},
            "report": "downstream/report.md", "plot": "downstream/downstream.png"}


def _story_lines(story: dict) -> list[str]:
    groups = list(story["retention"])
    options = [o for o in next(iter(story["retention"].values())) if o != "oracle"]
    names = {"none": "no guard", "peer": "robust model (dropout + fault mix), no guard",
             "dae": "DAE guard in front", "mmssl": "MMSSL guard in front"}
    lines = ["## Does the downstream model keep working when a sensor fails?", "",
             f"A phase classifier (camera + kinematics, macro F1 {story['oracle_clean'][0]:.3f} on clean input) "
             "on the demo's arm twin. Fraction of its clean performance kept under each group of faults "
             "(quick settings, one seed; `downstream/report.md`, `downstream/downstream.png`):", "",
             "| option | " + " | ".join(g.replace("_", " ") for g in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for o in options:
        lines.append(f"| {names.get(o, o)} | " + " | ".join(f"{story['retention'][g][o]:.2f}" for g in groups) + " |")
    return lines


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Seed for data, faults and training."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the end-to-end demo on the embedded default (synthetic data, no downloads)."""
    from mmguard.data.registry import load_dataset
    from mmguard.eval.evaluate import evaluate_run
    from mmguard.experiments.emma.config import EmmaRunConfig
    from mmguard.experiments.emma.run import run_emma
    from mmguard.experiments.runs import load_run
    from mmguard.faults import apply_faults, load_spec, preview_faults
    from mmguard.faults.builders import per_modality_rates
    from mmguard.io.checkpoint import atomic_write_text, write_json

    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        typer.echo(f"[demo] {msg}", err=True)

    batch = load_dataset(DEMO_DATASET, seed=seed)
    log(
        f"data: {DEMO_DATASET} -> {len(batch)} samples, modalities "
        + ", ".join(f"{s.name}{s.shape}" for s in batch.specs)
    )

    # 1. faults: training schedule and unseen spec, with statistics and a preview
    train_spec = per_modality_rates(
        {n: 0.5 / batch.num_modalities for n in batch.names},
        "gaussian_noise",
        {"sigma": 0.5},
        selection="exclusive",
    )
    unseen = load_spec(UNSEEN_SPEC)
    fault_dir = out / "faults"
    fault_dir.mkdir(exist_ok=True)
    train_spec.save(fault_dir / "training_schedule.yaml")
    unseen.save(fault_dir / "unseen.yaml")
    stats = {
        "training_schedule": corruption_stats(batch, apply_faults(batch, train_spec, seed=seed)),
        "unseen": corruption_stats(batch, apply_faults(batch, unseen, seed=seed)),
    }
    write_json(fault_dir / "corruption_stats.json", stats)
    preview_faults(batch, "m1", None, fault_dir / "preview.png", seed=seed)
    log("faults: statistics and preview written")

    # 0. the story first: does the downstream model keep working? (on the twin, generated here)
    twin = _twin_slice(out, seed, log)
    story = _downstream_story(out, twin, seed, log)

    # 2. EMMA protocol in quick mode
    cfg = EmmaRunConfig.quick_config(dataset=DEMO_DATASET, split_seed=seed, seeds=[seed, seed + 1])
    run_dir = out / "emma"
    metrics = run_emma(cfg, run_dir, log=lambda m: log(f"emma: {m}"), chapter4=False)

    # 3. robustness to faults never seen in training
    unseen_res = evaluate_run(load_run(run_dir), unseen, seed=seed)
    write_json(out / "emma_unseen_faults.json", unseen_res)

    # 5. MMSSL detect-and-correct on the twin (issue #5), quick mode
    from mmguard.experiments.mmssl.config import MmsslRunConfig
    from mmguard.experiments.mmssl.run import run_mmssl

    mcfg = MmsslRunConfig.quick_config(data=str(out / twin["file"]), seeds=[seed, seed + 1],
                                       severity_sweep=False, analysis=False)
    mmssl = run_mmssl(mcfg, out / "mmssl", log=lambda m: log(f"mmssl: {m}"))

    summary = {
        "dataset": DEMO_DATASET,
        "seed": seed,
        "corruption": stats,
        "emma_test_f1": metrics["f1"],
        "emma_selected": metrics["selected"]["with"],
        "unseen_faults_f1": unseen_res["f1"],
        "unseen_counts": unseen_res["counts"],
        "twin": twin,
        "downstream": story,
        "mmssl": {k: mmssl[k] for k in ("errors", "detection", "ratios", "targets")},
        "outputs": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
    }
    write_json(out / "summary.json", summary)
    lines = ["# mmguard demo", "", *_story_lines(story), "",
        f"Data: `{DEMO_DATASET}` (synthetic, embedded). Quick mode: 2 seeds, small grid.",
        "",
        "## EMMA, test F1 under the training corruption (mean ± std over seeds)",
        "",
        "| model | " + " | ".join(metrics["conditions"]) + " |",
        "|" + "---|" * (1 + len(metrics["conditions"])),
    ]
    for key, row in metrics["f1"].items():
        lines.append(
            f"| {key} | "
            + " | ".join(f"{row[c][0]:.3f} ± {row[c][1]:.3f}" for c in metrics["conditions"])
            + " |"
        )
    conds = list(unseen_res["counts"])
    lines += [
        "",
        "## Under faults never seen in training (`faults/unseen.yaml`)",
        "",
        "| model | " + " | ".join(f"{c} (n={unseen_res['counts'][c]})" for c in conds) + " |",
        "|" + "---|" * (1 + len(conds)),
    ]
    for key, row in unseen_res["f1"].items():
        lines.append(
            f"| {key} | "
            + " | ".join(f"{row[c][0]:.3f} ± {row[c][1]:.3f}" if c in row else "" for c in conds)
            + " |"
        )
    lines += [
        "",
        "## MMSSL on the arm twin (quick: 2 seeds; combined error vs the clean input, mean ± std)",
        "",
        "| model | clean | faulty |",
        "|---|---|---|",
    ]
    for key, row in mmssl["errors"].items():
        lines.append(f"| {key} | {row['clean']['combined'][0]:.3f} ± {row['clean']['combined'][1]:.3f} | "
                     f"{row['faulty']['combined'][0]:.3f} ± {row['faulty']['combined'][1]:.3f} |")
    d = mmssl["detection"]
    lines.append(f"\nDetection AUROC {d['auroc'][0]:.3f} ± {d['auroc'][1]:.3f}; plots in `mmssl/`.")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    if json_out:
        print_json(summary)
    else:
        typer.echo("\n".join(lines))
        typer.echo(f"\noutputs in {out}/ (summary.md, faults/preview.png, emma/report.md, ...)")
