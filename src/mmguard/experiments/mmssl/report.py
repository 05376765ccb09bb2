"""``report.md`` of an MMSSL run: the paper's table 1 layout with our numbers beside its ratios."""

from __future__ import annotations

from typing import Any

from mmguard.experiments.mmssl.config import MmsslRunConfig


def _pm(v: list[float], digits: int = 4) -> str:
    return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def render_report(metrics: dict[str, Any], cfg: MmsslRunConfig) -> str:
    e, det, ratios = metrics["errors"], metrics["detection"], metrics["ratios"]
    n = len(metrics["seeds"])
    lines = [
        "# MMSSL run report",
        "",
        f"Data: `{cfg.data}` — modalities {', '.join(cfg.modalities)}; split sizes {metrics['sizes']} "
        f"(whole episodes per split). Seeds: {metrics['seeds']} (mean ± std over {n}).",
        f"Mode: {'quick' if cfg.quick else 'full'}. Errors: MSE per sample on standardized data against the "
        "clean input; camera = image modalities, sensor = vector modalities, combined = sum.",
        "",
        "## Table 1 layout: test errors",
        "",
        "| model | clean camera | clean sensor | clean combined "
        "| faulty camera | faulty sensor | faulty combined |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, row in e.items():
        lines.append(
            f"| {m} | "
            + " | ".join(
                _pm(row[s][k]) for s in ("clean", "faulty") for k in ("camera", "sensor", "combined")
            )
            + " |"
        )
    paper = metrics["paper_table1"]
    lines += [
        "",
        "Paired per-seed ratios of combined errors: "
        f"faulty MMSSL/MMAE {_pm(ratios['faulty_mmssl_over_mmae'], 3)}, "
        f"faulty MMSSL/DAE {_pm(ratios['faulty_mmssl_over_dae'], 3)}, "
        f"clean MMSSL/MMAE {_pm(ratios['clean_mmssl_over_mmae'], 3)}. "
        "Paper (MuJoCo, their data): MMSSL/MMAE = "
        f"{paper['MMSSL']['combined'] / paper['MMAE']['combined']:.3f}, "
        f"MMSSL/best baseline (MMUGAN) = {paper['MMSSL']['combined'] / paper['MMUGAN']['combined']:.3f}.",
        "",
        "## Detection (training-family mix on test; gate calibrated on clean validation)",
        "",
        f"- AUROC {_pm(det['auroc'])}, F1 at the gate {_pm(det['f1'])}, "
        f"false-alarm rate on clean test {_pm(det['false_alarm_rate'])} "
        f"(target {cfg.compute.false_alarm_rate:g}), "
        f"detection rate {_pm(det['detection_rate'])}",
        "- per-modality AUROC: " + ", ".join(f"{k} {_pm(v)}" for k, v in det["per_modality_auroc"].items()),
        "",
        "## Targets (issue #5)",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for name, t in metrics["targets"].items():
        val = "n/a" if t["value"] is None else f"{t['value']:.4f}"
        lines.append(f"| {name} | {val} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
    lines += [
        "",
        "## Per fault family (rate 1 on test)",
        "",
        "| family | origin | AUROC | detected | MMAE | DAE | MMSSL | MMSSL oracle routing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, f in metrics["families"].items():
        er = f["errors"]
        lines.append(
            f"| {label} | {f['origin']} | {_pm(f['auroc'], 3)} | {_pm(f['detection_rate'], 2)} | "
            f"{_pm(er['mmae']['combined'], 3)} | {_pm(er['dae']['combined'], 3)} | "
            f"{_pm(er['mmssl']['combined'], 3)} | {_pm(er['mmssl_oracle_routing']['combined'], 3)} |"
        )
    if metrics.get("severity"):
        lines += ["", "## Severity sweeps (combined error; detection rate at the gate)", ""]
        for label, s in metrics["severity"].items():
            vals = [v[0] if isinstance(v, list) else v for v in s["values"]]
            lines += [
                f"**{label}** ({s['origin']})",
                "",
                "| severity | " + " | ".join(f"{v:g}" for v in vals) + " |",
                "|---|" + "---|" * len(vals),
            ]
            for m in ("mmae", "dae", "mmssl"):
                lines.append(f"| {m} | " + " | ".join(f"{x[0]:.3f}" for x in s["errors"][m]) + " |")
            lines.append("| detected | " + " | ".join(f"{x[0]:.2f}" for x in s["detection_rate"]) + " |")
            lines.append("")
    c = metrics.get("contraction")
    if c:
        lines += [
            "",
            "## Contraction check (corrector)",
            "",
            "| member | exact bound Π‖W‖₂ | empirical max ratio |",
            "|---|---|---|",
        ]
        for m, v in c.items():
            lines.append(f"| {m} | {_pm(v['upper_bound'])} | {_pm(v['empirical_max'])} |")
    a = metrics.get("analysis")
    if a:
        lines += ["", f"## Analysis (seed {a['seed']})", ""]
        ov = a["latent_overlap"]
        lines.append(
            f"- latent overlap with clean latents ({ov['samples']} faulty test samples): MMD² corrupted "
            f"{ov['mmd2']['corrupted']:.4f} → corrected {ov['mmd2']['corrected']:.4f}; Fréchet "
            f"{ov['frechet']['corrupted']:.3f} → {ov['frechet']['corrected']:.3f}"
        )
        fe = a["fault_entropy"]
        for which in ("default", "alternative"):
            for mod, r in fe[which].items():
                lines.append(
                    f"- fault entropy, {which} {mod} encoder ({r['encoder']}): first layer entropy "
                    f"{r['first_layer']['entropy'][0]:.3f}, gini {r['first_layer']['gini'][0]:.3f}; "
                    f"code entropy {r['code']['entropy'][0]:.3f}, top-5 share "
                    f"{r['code']['top5_share'][0]:.3f}"
                )
        for model, per in a["lipschitz"].items():
            for mod, layers in per.items():
                lines.append(
                    f"- local Lipschitz, {model} {mod}: "
                    + ", ".join(f"{k} {v['mean']:.2f}" for k, v in layers.items())
                )
        for model, per in a["jacobian_variation"].items():
            for mod, v in per.items():
                lines.append(
                    f"- Jacobian variation (σ={v['sigma']}), {model} {mod}: L clean "
                    f"{v['lipschitz_clean']:.3f}, noisy {v['lipschitz_noisy']:.3f}, relative ‖ΔJ‖_F "
                    f"{v['relative_variation']:.3f}"
                )
    lines += [
        "",
        f"Wall time: {metrics['timing']['wall_s']:.0f} s. Plots: " + ", ".join(metrics.get("plots", [])),
        "",
    ]
    return "\n".join(lines)
