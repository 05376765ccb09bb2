"""Registry contents and the behaviour of individual fault types."""

from __future__ import annotations

import pytest
import torch

from mmguard.data.model import ModalityKind
from mmguard.errors import DataError, SpecError
from mmguard.faults import corrupt, fault_catalog, fault_names, get_fault, list_faults, register_fault
from mmguard.faults.registry import FaultParams


def test_catalog_lists_at_least_15_described_faults():
    catalog = fault_catalog()
    assert len(catalog) >= 15
    names = {f["name"] for f in catalog}
    assert {"gaussian_noise", "missing", "stuck_at", "offset", "gain", "drift", "spikes", "saturation",
            "quantization", "image_gaussian_noise", "salt_and_pepper", "occlusion", "blur",
            "brightness_contrast", "dead_pixels", "dead_lines", "frozen_frame"} <= names
    for f in catalog:
        assert f["kinds"] and set(f["kinds"]) <= {"vector", "timeseries", "image"}
        assert f["summary"]
        pnames = [p["name"] for p in f["params"]]
        if f["severity"] is not None:
            assert f["severity"] in pnames
        for p in f["params"]:
            assert set(p) >= {"name", "type", "default", "description"} and p["description"]
    assert {f.name for f in list_faults("image")} >= {"blur", "frozen_frame", "gaussian_noise"}
    assert "blur" not in {f.name for f in list_faults(ModalityKind.VECTOR)}
    with pytest.raises(SpecError, match="'sound'"):
        list_faults("sound")


def test_get_fault_aliases_and_unknown():
    assert get_fault("dropout").name == "missing"
    assert get_fault("clipping").name == "saturation"
    with pytest.raises(SpecError, match="'warp'"):
        get_fault("warp")


def test_register_rejects_duplicates_and_bad_severity():
    class P(FaultParams):
        level: float = 1.0

    with pytest.raises(SpecError, match="already registered"):
        register_fault("blur", params=P, kinds=("image",), severity="level")(lambda x, p, c: x)
    with pytest.raises(SpecError, match="'nope'"):
        register_fault("x_test_fault", params=P, kinds=("image",), severity="nope")(lambda x, p, c: x)
    assert "x_test_fault" not in fault_names()


def test_corrupt_never_writes_its_input():
    for name in fault_names():
        for kind in get_fault(name).kinds:
            shape = {"vector": (6, 4), "timeseries": (6, 5, 2), "image": (6, 3, 8, 8)}[kind.value]
            x = torch.rand(*shape)
            before = x.clone()
            y = corrupt(x, name, kind=kind, seed=1)
            assert torch.equal(x, before), name
            assert y.shape == x.shape and y.dtype == x.dtype and y.data_ptr() != x.data_ptr()


def test_corrupt_errors_and_dtype():
    with pytest.raises(DataError, match="floating-point"):
        corrupt(torch.zeros(3, 4, dtype=torch.long), "offset")
    with pytest.raises(SpecError, match="'blur'"):
        corrupt(torch.zeros(3, 4), "blur")
    with pytest.raises(DataError, match="shape"):
        corrupt(torch.zeros(3), "offset")
    y = corrupt(torch.zeros(4, 3, dtype=torch.float64), "gaussian_noise", {"sigma": 1.0})
    assert y.dtype == torch.float64
    assert corrupt(torch.zeros(0, 3), "gaussian_noise", {"snr_db": 3.0}).shape == (0, 3)


def test_occlusion_patches_have_the_given_size_and_fill():
    x = torch.rand(20, 3, 16, 12) + 1.0
    y = corrupt(x, "occlusion", {"size": 5, "fill": 0.0}, seed=3)
    covered = (y == 0).all(dim=1)
    assert (covered.flatten(1).sum(dim=1) == 25).all()
    big = corrupt(x, "occlusion", {"size": 100}, seed=3)  # clamped to the image
    assert (big == 0).all()
    rows = covered.any(dim=2).sum(dim=1)
    assert (rows == 5).all()
    tops = covered.any(dim=2).float().argmax(dim=1)
    assert len(set(tops.tolist())) > 1  # positions vary between samples


def test_blur_keeps_constants_and_smooths():
    const = torch.full((2, 3, 10, 10), 0.7)
    assert torch.allclose(corrupt(const, "blur", {"sigma": 2.0}), const, atol=1e-6)
    x = torch.rand(4, 1, 32, 32)
    y = corrupt(x, "blur", {"sigma": 1.5})
    assert y.diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()
    assert torch.allclose(y.mean(), x.mean(), atol=0.02)
    assert torch.equal(corrupt(x, "blur", {"sigma": 0.0}), x)


def test_dead_pixels_and_lines():
    x = torch.full((5, 3, 20, 20), 0.5)
    y = corrupt(x, "dead_pixels", {"fraction": 0.2}, seed=1)
    dead = (y != 0.5).all(dim=1)
    assert ((y == 0) | (y == 1) | (y == 0.5)).all()
    assert torch.equal(dead, dead[:1].expand_as(dead))  # shared map
    assert 0.1 < dead.float().mean() < 0.3
    own = (corrupt(x, "dead_pixels", {"fraction": 0.2, "shared": False}, seed=1) != 0.5).all(dim=1)
    assert not torch.equal(own, own[:1].expand_as(own))
    rows = corrupt(x, "dead_lines", {"count": 3, "axis": "rows", "value": 0.0}, seed=2)
    dead_rows = (rows == 0).all(dim=(1, 3))
    assert (dead_rows.sum(dim=1) == 3).all()
    cols = corrupt(x, "dead_lines", {"count": 50, "axis": "cols"}, seed=2)
    assert (cols == 0).all()


def test_salt_and_pepper_brightness_and_noise_clip():
    x = torch.full((50, 1, 10, 10), 0.5)
    y = corrupt(x, "salt_and_pepper", {"amount": 0.3, "salt_ratio": 1.0}, seed=0)
    assert set(torch.unique(y).tolist()) == {0.5, 1.0}
    assert abs(float((y == 1).float().mean()) - 0.3) < 0.03
    b = corrupt(torch.rand(3, 3, 5, 5), "brightness_contrast", {"brightness": 0.9, "clip": True})
    assert b.max() <= 1.0 and b.min() >= 0.0
    flat = {"brightness": 0.0, "contrast": 0.0}
    c = corrupt(x + torch.rand(50, 1, 10, 10) * 0.1, "brightness_contrast", flat)
    assert torch.allclose(c, c.mean(dim=(2, 3), keepdim=True).expand_as(c))
    n = corrupt(x, "image_gaussian_noise", {"sigma": 2.0, "clip": True})
    assert n.min() >= 0.0 and n.max() <= 1.0
    mono = corrupt(torch.zeros(4, 3, 6, 6), "image_gaussian_noise", {"monochrome": True})
    assert torch.equal(mono[:, 0], mono[:, 1])


def test_vector_faults_exact_values():
    x = torch.randn(100, 5)
    assert torch.equal(corrupt(x, "offset", {"value": 2.0}), x + 2.0)
    assert torch.equal(corrupt(x, "gain", {"factor": 0.5}), x * 0.5)
    assert torch.equal(corrupt(x, "saturation", {"bound": 0.3}), x.clamp(-0.3, 0.3))
    assert torch.equal(corrupt(x, "saturation", {"hi": 0.1}), x.clamp(max=0.1))
    q = corrupt(x, "quantization", {"step": 0.5})
    assert torch.allclose(q / 0.5, (q / 0.5).round()) and (q - x).abs().max() <= 0.25 + 1e-6
    s = corrupt(x, "spikes", {"prob": 0.1, "amplitude": 7.0, "sign": "positive"}, seed=2)
    d = s - x
    assert torch.all((d == 0) | ((d - 7.0).abs() < 1e-5)) and 0.05 < (d != 0).float().mean() < 0.15
    assert (corrupt(x, "stuck_at", {"value": -3.0}) == -3.0).all()
