"""Checkpoints (safetensors + JSON, atomic writes, no pickle) and JSON conversion."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import mmguard.io.checkpoint as ckpt
from mmguard.errors import CheckpointError, MMGuardError
from mmguard.io import atomic_write_text, load_checkpoint, save_checkpoint, write_json
from mmguard.io.checkpoint import CONFIG, WEIGHTS, read_json


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(3, 4, generator=g),
        "layer.bias": torch.randn(4, generator=g, dtype=torch.float64),
        "counts": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
        "view": torch.randn(4, 6, generator=g).t(),  # non-contiguous
        "scalar": torch.tensor(2.5),
    }


def assert_one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    assert "Traceback" not in text


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


# ---------------------------------------------------------------------------- round trip
def test_round_trip_preserves_tensors_and_config(tmp_path: Path) -> None:
    src = tensors()
    config = {"architecture": {"kind": "mlp", "sizes": [4, 8, 1]}, "threshold": 0.25, "names": ["ip", "dm"]}
    save_checkpoint(tmp_path / "ck", src, config)
    got, cfg = load_checkpoint(tmp_path / "ck")
    assert cfg == config
    assert set(got) == set(src)
    for k, v in src.items():
        assert got[k].dtype == v.dtype, k
        assert tuple(got[k].shape) == tuple(v.shape), k
        assert torch.equal(got[k], v), k
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CONFIG, WEIGHTS]


def test_checkpoint_has_no_pickle(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tensors(), {"a": 1})
    raw = (tmp_path / WEIGHTS).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    assert "layer.weight" in header and header["layer.weight"]["dtype"] == "F32"
    assert json.loads((tmp_path / CONFIG).read_text()) == {"a": 1}


def test_save_overwrites_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "ck"
    save_checkpoint(target, {"x": torch.zeros(2)}, {"v": 1})
    save_checkpoint(target, {"y": torch.ones(3)}, {"v": 2})
    got, cfg = load_checkpoint(target)
    assert set(got) == {"y"} and torch.equal(got["y"], torch.ones(3))
    assert cfg == {"v": 2}
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- atomicity
def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    for i in range(3):
        save_checkpoint(tmp_path / "ck", tensors(), {"i": i})
        atomic_write_text(tmp_path / "note.md", f"version {i}\n")
        write_json(tmp_path / "m.json", {"i": i})
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "m.json", "note.md"]
    assert (tmp_path / "note.md").read_text() == "version 2\n"


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path, {"x": torch.arange(4)}, {"v": 1})
    before = (tmp_path / WEIGHTS).read_bytes()

    def crash(flat, path):  # a write that dies half-way
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"x": torch.arange(9)}, {"v": 2})
    assert (tmp_path / WEIGHTS).read_bytes() == before
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    got, cfg = load_checkpoint(tmp_path)
    assert torch.equal(got["x"], torch.arange(4)) and cfg == {"v": 1}


def test_unserialisable_json_leaves_old_file(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(tmp_path / "m.json", {"bad": object()})
    assert json.loads((tmp_path / "m.json").read_text()) == {"ok": 1}
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- corrupt files
def _good(tmp_path: Path) -> bytes:
    save_checkpoint(tmp_path, tensors(), {"a": 1})
    return (tmp_path / WEIGHTS).read_bytes()


@pytest.mark.parametrize("kind", ["empty", "short", "truncated", "truncated_header", "garbage", "huge_header",
                                  "bad_header_json"])
def test_corrupt_weights_raise_checkpoint_error(tmp_path: Path, kind: str) -> None:
    full = _good(tmp_path)
    data = {
        "empty": b"",
        "short": b"abc",
        "truncated": full[: len(full) - 7],
        "truncated_header": full[:20],
        "garbage": bytes(range(256)) * 3,
        "huge_header": struct.pack("<Q", 2**62) + b"{}",
        "bad_header_json": struct.pack("<Q", 5) + b"{{{{{",
    }[kind]
    (tmp_path / WEIGHTS).write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert_one_line(info.value)
    assert WEIGHTS in str(info.value)
    assert isinstance(info.value, MMGuardError) and info.value.exit_code == 2


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe", '{"a": 1', "[1, 2, 3]", '"text"', "null"])
def test_malformed_config_raises_checkpoint_error(tmp_path: Path, text: str) -> None:
    _good(tmp_path)
    if text == "\xff\xfe":
        (tmp_path / CONFIG).write_bytes(b"\xff\xfe\x00garbage")
    else:
        (tmp_path / CONFIG).write_text(text)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert_one_line(info.value)
    assert CONFIG in str(info.value)


def test_missing_files_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing weights"):
        load_checkpoint(tmp_path / "nowhere")
    _good(tmp_path)
    (tmp_path / CONFIG).unlink()
    with pytest.raises(CheckpointError, match="missing file") as info:
        load_checkpoint(tmp_path)
    assert_one_line(info.value)
    with pytest.raises(CheckpointError):
        read_json(tmp_path / "absent.json")


def test_weights_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / WEIGHTS).mkdir()
    (tmp_path / CONFIG).write_text("{}")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------- JSON conversion
def test_write_json_converts_nan_numpy_and_torch(tmp_path: Path) -> None:
    obj = {
        "nan": float("nan"),
        "inf": float("inf"),
        "neg_inf": -math.inf,
        "np_nan": np.float64("nan"),
        "np_f32": np.float32(1.5),
        "np_f64": np.float64(0.25),
        "np_int": np.int64(7),
        "np_int32": np.int32(-3),
        "np_array": np.array([[1, 2], [3, 4]]),
        "np_float_array": np.array([1.0, np.nan]),
        "torch_vec": torch.tensor([1.0, float("nan"), float("inf")]),
        "torch_scalar": torch.tensor(3),
        "torch_bool": torch.tensor([True, False]),
        "torch_grad": torch.ones(2, requires_grad=True) * 2,
        "tuple": (1, 2.0),
        "path": Path("/a/b"),
        "nested": [{"x": np.float32(2.0)}, (np.int16(1),)],
        np.int64(5): "numpy key",
        "plain": "text",
        "none": None,
        "bool": True,
    }
    write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    got = json.loads(text)
    assert got["nan"] is None and got["inf"] is None and got["neg_inf"] is None and got["np_nan"] is None
    assert got["np_f32"] == 1.5 and got["np_f64"] == 0.25
    assert got["np_int"] == 7 and isinstance(got["np_int"], int) and got["np_int32"] == -3
    assert got["np_array"] == [[1, 2], [3, 4]]
    assert got["np_float_array"] == [1.0, None]
    assert got["torch_vec"] == [1.0, None, None]
    assert got["torch_scalar"] == 3
    assert got["torch_bool"] == [True, False]
    assert got["torch_grad"] == [2.0, 2.0]
    assert got["tuple"] == [1, 2.0]
    assert got["path"] == "/a/b"
    assert got["nested"] == [{"x": 2.0}, [1]]
    assert got["5"] == "numpy key"
    assert got["plain"] == "text" and got["none"] is None and got["bool"] is True


def test_write_json_converts_numpy_bool(tmp_path: Path) -> None:
    # numpy comparisons yield np.bool_ (e.g. ``np.all(a == b)``); it must be written as true/false
    obj = {"match": np.bool_(True), "flags": [np.bool_(False)], "eq": np.all(np.array([1, 2]) > 0)}
    write_json(tmp_path / "b.json", obj)
    assert json.loads((tmp_path / "b.json").read_text()) == {"match": True, "flags": [False], "eq": True}
