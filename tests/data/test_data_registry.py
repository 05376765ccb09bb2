"""load_dataset (names, URIs, query parameters) and dataset_info."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmguard.data import dataset_info, known_datasets, load_dataset
from mmguard.errors import DataError, SpecError

THESIS_SPLITS = {"train": (11_992, 1_098), "val": (2_953, 270), "test": (2_953, 271)}


def test_named_datasets(data_env: Path) -> None:
    assert len(load_dataset("htru2")) == 17_898
    toy = load_dataset("toy", seed=1)
    assert toy.names == ("m0", "m1", "m2") and len(toy) == 2000
    assert torch.equal(toy.concat_flat(), load_dataset("toy", seed=1).concat_flat())
    wave = load_dataset("wave?n=64&noise=0")
    assert wave.names == ("x",) and wave.spec("x").shape == (2,) and wave.target is None and len(wave) == 64
    circle = load_dataset("circle", seed=3)
    assert torch.allclose(circle.modalities["x"].norm(dim=1), torch.full((1000,), 3.0), atol=1e-5)
    custom = load_dataset("toy?n=40&modality_dims=2,2,2,2&redundancy=1,0,1,0&num_classes=3&episode_length=10")
    assert custom.num_modalities == 4 and sorted(custom.meta) == ["episode", "t"]


def test_explicit_data_dir_and_path(data_root: Path, no_data_env: Path) -> None:
    assert len(load_dataset("htru2", data_dir=data_root)) == 17_898
    assert len(load_dataset(f"htru2:{data_root / 'htru2'}")) == 17_898


def test_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown dataset 'mnist'; known: htru2, toy, wave, circle, csv:PATH"):
        load_dataset("mnist")
    with pytest.raises(SpecError, match=r"needs a YAML mapping"):
        load_dataset(f"csv:{tmp_path / 'x.csv'}")
    with pytest.raises(SpecError, match="a mapping only applies"):
        load_dataset("toy", mapping={"modalities": {}})
    with pytest.raises(SpecError, match="toy: unknown parameter 'size=3'"):
        load_dataset("toy?size=3")
    with pytest.raises(SpecError, match="bad value for n: 'many'"):
        load_dataset("wave?n=many")
    with pytest.raises(DataError, match="array file not found"):
        load_dataset(str(tmp_path / "missing.npz"))  # bare path with a known suffix
    assert "h5:PATH" in known_datasets()


def test_dataset_info_for_htru2(htru2_batch) -> None:
    info = dataset_info(htru2_batch)  # recognised from its specs
    assert info["name"] == "htru2" and info["n_samples"] == 17_898 and info["task"] == "binary"
    assert info["classes"] == {"0": 16_259, "1": 1_639}
    assert [m["name"] for m in info["modalities"]] == ["ip", "dm"]
    assert info["modalities"][0]["kind"] == "vector" and info["modalities"][0]["shape"] == [4]
    for part, (n, pos) in THESIS_SPLITS.items():
        assert info["splits"][part]["n"] == n and info["splits"][part]["positives"] == pos
    assert info["matches_thesis_table_6_1"] is True


def test_dataset_info_other_tasks() -> None:
    toy = load_dataset("toy?n=300&num_classes=3")
    info = dataset_info(toy)
    assert info["name"] is None and info["task"] == "multiclass" and sum(info["classes"].values()) == 300
    assert "positives" not in info["splits"]["train"] and "thesis_table_6_1" not in info
    reg = toy.with_faults(torch.zeros(300, 3, dtype=torch.bool), torch.full((300, 3), -1), ())
    reg = type(toy)(reg.modalities, reg.specs, target=torch.linspace(0, 1, 300), fault_mask=reg.fault_mask,
                    fault_codes=reg.fault_codes)
    rinfo = dataset_info(reg)
    assert rinfo["task"] == "regression" and rinfo["target"]["max"] == pytest.approx(1.0)
    assert rinfo["faulty_fraction"] == {"m0": 0.0, "m1": 0.0, "m2": 0.0}
    tiny = dataset_info(load_dataset("toy?n=4&num_classes=3"))
    assert "error" in tiny["splits"]
    json.dumps(tiny)
