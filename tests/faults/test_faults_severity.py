"""The error to the clean signal grows with each fault's severity parameter."""

from __future__ import annotations

import pytest
import torch
from faults_testutil import KIND_TO_MODALITY, make_batch

from mmguard.data.model import MultimodalBatch
from mmguard.faults import apply_faults, fault_names, get_fault, severity_sweep, single_fault_spec

# Severity values to sweep, in the order in which the error must not decrease.
SWEEPS: dict[str, list[float]] = {
    "gaussian_noise": [0.0, 0.1, 0.5, 1.0, 2.0],
    "missing": [0.05, 0.2, 0.5, 0.8, 1.0],
    "stuck_at": [0.0, 0.5, 1.0, 2.0, 4.0],
    "offset": [0.0, 0.25, 1.0, 3.0],
    "gain": [1.0, 1.25, 2.0, 4.0],
    "drift": [0.0, 0.01, 0.05, 0.2],
    "spikes": [0.0, 1.0, 5.0, 20.0],
    "saturation": [5.0, 2.0, 1.0, 0.5, 0.1],  # decreasing bound = growing error
    "quantization": [0.01, 0.1, 0.5, 1.0, 2.0],
    "image_gaussian_noise": [0.0, 0.05, 0.2, 1.0],
    "salt_and_pepper": [0.0, 0.05, 0.2, 0.6],
    "occlusion": [1, 4, 8, 16],
    "blur": [0.0, 0.5, 1.0, 2.0, 4.0],
    "brightness_contrast": [0.0, 0.1, 0.3, 0.9],
    "dead_pixels": [0.0, 0.01, 0.1, 0.5],
    "dead_lines": [0, 1, 2, 4, 8],
    "slow_drift": [0.0, 0.1, 0.5, 1.0],  # steps large next to offset_rate (docs/faults.md)
}


def test_every_severity_fault_is_covered():
    with_severity = {n for n in fault_names() if get_fault(n).severity is not None}
    assert with_severity == set(SWEEPS)
    assert get_fault("frozen_frame").severity is None


def _image_batch(n: int = 64, centred: bool = False):
    """Images with structure (so blur changes them) plus fine noise; ``centred`` subtracts 0.5
    (stuck_at's error grows with |value| only on centred, i.e. standardized, data)."""
    g = torch.Generator().manual_seed(5)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 24), indexing="ij")
    base = ((xx * 6).floor() + (yy * 6).floor()) % 2  # checkerboard
    img = base.expand(n, 3, 24, 24) * 0.8 + 0.1 * torch.rand(n, 3, 24, 24, generator=g)
    return MultimodalBatch.from_arrays({"img": img - 0.5 if centred else img})


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_error_grows_with_severity(name):
    fault = get_fault(name)
    for kind in sorted(k.value for k in fault.kinds):
        batch = _image_batch(centred=name == "stuck_at") if kind == "image" else make_batch(400, seed=3)
        mod = KIND_TO_MODALITY[kind]
        base = single_fault_spec(mod, name, rate=1.0)
        specs = severity_sweep(base, SWEEPS[name])
        errors = []
        for spec in specs:
            out = apply_faults(batch, spec, seed=11)
            errors.append(float((out.modalities[mod] - batch.modalities[mod]).abs().mean()))
        assert all(b >= a - 1e-7 for a, b in zip(errors, errors[1:], strict=False)), (name, kind, errors)
        assert errors[-1] > errors[0], (name, kind, errors)


def test_sweep_sets_the_severity_param_and_resets_alternatives():
    entry = {"modality": "vec", "type": "gaussian_noise", "params": {"snr_db": 10.0}, "rate": 0.5}
    specs = severity_sweep(entry, [0.1, 0.2])
    assert [s.faults[0].params for s in specs] == [{"sigma": 0.1, "snr_db": None},
                                                   {"sigma": 0.2, "snr_db": None}]
    assert all(s.faults[0].rate == 0.5 for s in specs)
    assert specs[0].scenario.name.endswith("[sigma=0.1]")
    sat = severity_sweep(single_fault_spec("vec", "saturation", {"lo": -1, "hi": 2}), [3.0])
    assert sat[0].faults[0].params == {"bound": 3.0, "lo": None, "hi": None}


def test_snr_db_sets_noise_power_relative_to_signal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=g) * torch.linspace(0.5, 4.0, 2000)[:, None]
    batch = MultimodalBatch.from_arrays({"v": x})
    out = apply_faults(batch, single_fault_spec("v", "gaussian_noise", {"snr_db": 10.0}), seed=0)
    noise_power = (out.modalities["v"] - x).pow(2).mean(dim=1)
    ratio = x.pow(2).mean(dim=1) / noise_power
    assert abs(float(10 * torch.log10(ratio.mean())) - 10.0) < 0.5
    assert abs(float((10 * torch.log10(ratio)).median()) - 10.0) < 0.5
