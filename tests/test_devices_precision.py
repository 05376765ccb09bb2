"""Device and precision (docs/devices.md): one-line errors, the autocast scope, bf16 guards on the CPU.

Tolerances of bf16 against fp32 (stated here and in docs/devices.md):

* **inference** — the same fitted guard scored in bf16 and in fp32: normalised scores (1.0 = the
  threshold) within 0.15 and corrections within 0.15 standard deviations of each modality — the
  tolerance ``benchmarks/gpu_check.py`` applies to CUDA bf16;
* **training** — a bf16 fit is another training run: rounding changes the trajectory, and MMSSL's
  stage 2 (SGD under gradient modulation) amplifies that as much as a change of seed does. So the
  bf16 fit is held to the seed-to-seed variation of fp32 fits: its median |Δ score| against the
  fp32 fit at most twice that of two fp32 seeds (+ 0.05), and its flag decisions agreeing with the
  fp32 fit's at most 20 points less often than the two fp32 seeds agree with each other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import make_splits
from mmguard.devices import (
    autocast,
    check_precision,
    current_precision,
    resolve_device,
    resolve_precision,
    use_precision,
)
from mmguard.errors import SpecError
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import create_guard, load_guard
from support import one_line

INFERENCE_TOL = 0.15


def test_precision_is_checked_in_one_line() -> None:
    assert check_precision(" BF16 ") == "bf16" and check_precision("fp32") == "fp32"
    for bad in ("fp16", "half", ""):
        with pytest.raises(SpecError) as exc:
            check_precision(bad)
        one_line(exc.value, "precision", "fp32", "bf16")
    with pytest.raises(SpecError) as exc:
        resolve_precision("bf16", "tpu")
    one_line(exc.value, "device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line() -> None:
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(SpecError) as exc:
            resolve_device(dev)
        one_line(exc.value, "cuda", "no CUDA GPU")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SpecError):
        create_guard("mmae", device="cuda", precision="bf16")


def test_autocast_only_for_bf16_and_use_precision_is_scoped() -> None:
    lin, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with autocast("cpu", "fp32"):
        assert lin(x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert current_precision() == "fp32"
    with autocast("cpu"):  # the ambient precision: fp32
        assert lin(x).dtype == torch.float32
    with use_precision("bf16"):
        assert current_precision() == "bf16"
        with autocast("cpu"):
            assert lin(x).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):  # an explicit precision wins
            assert lin(x).dtype == torch.float32
    assert current_precision() == "fp32"
    with pytest.raises(SpecError):
        with use_precision("fp8"):
            pass


def small_twin(episodes: int = 12, steps: int = 20, seed: int = 0) -> MultimodalBatch:
    """A 3x16x16 camera and a 6-d kinematics vector driven by one smooth 2-d walk per episode."""
    rng = np.random.default_rng(seed)
    n = episodes * steps
    z = np.cumsum(rng.normal(scale=0.4, size=(episodes, steps, 2)), 1).reshape(n, 2)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    basis = np.stack([np.stack([xx, yy, xx * yy]), np.stack([yy, -xx, yy * yy - 0.3])])  # (2, 3, 16, 16)
    camera = np.einsum("nk,kchw->nchw", z, basis) * 0.2 + 0.5 + 0.02 * rng.normal(size=(n, 3, 16, 16))
    kin = np.concatenate([z, np.sin(z), z[:, :1] * z[:, 1:], np.cos(z[:, :1])], 1) + 0.05 * rng.normal(size=(n, 6))
    return MultimodalBatch.from_arrays({"camera": camera.astype(np.float32), "kinematics": kin},
                                       target=(z[:, 0] > 0).astype(np.int64),
                                       meta={"episode": np.repeat(np.arange(episodes), steps),
                                             "t": np.tile(np.arange(steps), episodes)})


@pytest.fixture(scope="module")
def data():
    splits = make_splits(small_twin(), seed=0)
    faulty = apply_faults(splits.test, training_spec(splits.test), seed=3)
    return splits, faulty


def fitted_mmssl(splits, seed: int = 0, precision: str = "fp32"):
    guard = create_guard("mmssl", {"drift": None}, quick=True, precision=precision)
    guard.fit(splits, seed=seed)
    return guard


@pytest.fixture(scope="module")
def mmssl_fp32(data):
    return fitted_mmssl(data[0])


def test_bf16_inference_within_tolerance_of_fp32(data, mmssl_fp32, tmp_path) -> None:
    splits, faulty = data
    ref = mmssl_fp32
    bf16 = load_guard(ref.save(tmp_path / "g"), precision="bf16")
    assert (ref.precision, bf16.precision) == ("fp32", "bf16")
    s32, s16 = ref.score(faulty), bf16.score(faulty)
    assert s16.dtype == torch.float32 and bool(torch.isfinite(s16).all())
    assert float((s16 - s32).abs().max()) <= INFERENCE_TOL
    f32, f16 = ref.transform(faulty), bf16.transform(faulty)
    for n in faulty.names:
        assert f16.modalities[n].dtype == faulty.modalities[n].dtype
        sd = float(splits.train.modalities[n].float().std())
        assert float((f16.modalities[n] - f32.modalities[n]).abs().max()) <= INFERENCE_TOL * sd, n
    ref.set_precision("fp32")
    assert torch.equal(ref.score(faulty), s32)  # fp32 is exactly fp32: no autocast at all


def test_bf16_training_runs_and_stays_within_seed_variation(data, mmssl_fp32) -> None:
    splits, faulty = data
    guard = fitted_mmssl(splits, precision="bf16")
    assert guard.precision == "bf16"
    # the calibration is computed from fp32 raw scores of clean validation data, whatever the precision
    clean_val = guard.standardizer.transform(splits.val)
    again = guard._calibrate(guard._raw_scores(clean_val, precision="fp32"))
    for k in ("loc", "scale"):
        assert torch.equal(again[k], guard.calibration[k])
    s16, s32, other = guard.score(faulty), mmssl_fp32.score(faulty), fitted_mmssl(splits, seed=1).score(faulty)
    assert bool(torch.isfinite(s16).all())

    def median_diff(a, b):
        return float((a - b).abs().median())

    def agreement(a, b):
        return float(((a > 1) == (b > 1)).float().mean())

    assert median_diff(s16, s32) <= 2 * median_diff(other, s32) + 0.05
    assert agreement(s16, s32) >= agreement(other, s32) - 0.2
    fixed = guard.transform(faulty)
    assert all(bool(torch.isfinite(fixed.modalities[n]).all()) for n in faulty.names)


def test_emma_keeps_fp32_when_bf16_is_asked_for() -> None:
    guard = create_guard("emma", precision="bf16")
    assert guard.precision == "fp32" and not guard.mixed_precision
    assert create_guard("mmae", precision="bf16").precision == "bf16"
