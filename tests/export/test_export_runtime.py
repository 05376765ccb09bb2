"""OnnxGuard refuses what the torch guard refuses, with the same one-line errors; export refuses a
guard without the hook, an unfitted guard and a directory as output; loading refuses files that are
not mmguard ONNX models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from contract.test_guard_contract import replace_modalities
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import make_splits
from mmguard.errors import CheckpointError, DataError, MMGuardError, NotFittedError, SpecError
from mmguard.export.onnx import export_onnx
from mmguard.export.runtime import OnnxGuard
from mmguard.guard import Guard, GuardConfig, create_guard
from support import one_line


def same_error(torch_call, onnx_call, *words: str) -> str:
    """Both calls raise an MMGuardError of the same class with the same one-line text."""
    with pytest.raises(MMGuardError) as a:
        torch_call()
    with pytest.raises(MMGuardError) as b:
        onnx_call()
    assert type(a.value) is type(b.value), (a.value, b.value)
    assert str(a.value) == str(b.value)
    return one_line(b.value, *words)


def bad_batches(batch: MultimodalBatch) -> list[tuple[MultimodalBatch, tuple[str, ...]]]:
    mods = {n: batch.modalities[n].numpy() for n in batch.names}
    first, *rest = batch.names
    nan = dict(mods)
    nan[first] = nan[first].copy()
    nan[first][3, 0] = np.nan
    inf = dict(mods)
    inf[rest[0]] = inf[rest[0]].copy()
    inf[rest[0]][5, 0] = np.inf
    wide = dict(mods)
    wide[first] = np.concatenate([wide[first], wide[first][:, :1]], 1)
    return [
        (replace_modalities(batch, {n: mods[n] for n in rest}), ("missing", repr(first))),
        (replace_modalities(batch, {**mods, "lidar": mods[first]}), ("unknown", "lidar")),
        (replace_modalities(batch, {n: mods[n] for n in reversed(batch.names)}), ("another order",)),
        (replace_modalities(batch, wide), (repr(first), "shape")),
        (replace_modalities(batch, nan), ("NaN", repr(first), "sample 3")),
        (replace_modalities(batch, inf), ("NaN/Inf", repr(rest[0]), "sample 5")),
        (batch.select(slice(0, 0)), ("empty",)),
    ]


@pytest.mark.parametrize("case", [("mmssl", "vector"), ("emma", "vector"), ("mmae", "image")],
                         ids=lambda c: f"{c[0]}-{c[1]}")
def test_bad_inputs_are_refused_like_the_torch_guard(case, get_exported) -> None:
    e = get_exported(*case)
    methods = (["score", "flag"] if e.guard.flags else []) + (["transform"] if e.guard.corrects else []) \
        + (["predict"] if e.guard.predicts else [])
    for method in methods:
        for batch, words in bad_batches(e.splits.test):
            same_error(lambda b=batch, m=method: getattr(e.guard, m)(b),
                       lambda b=batch, m=method: getattr(e.onnx, m)(b), *words)
    with pytest.raises(DataError):
        e.onnx.score({"v0": np.zeros((2, 4))})  # type: ignore[arg-type]


def test_missing_capabilities_are_refused_like_the_torch_guard(get_exported) -> None:
    mmae, emma = get_exported("mmae", "vector"), get_exported("emma", "vector")
    batch = mmae.splits.test
    same_error(lambda: mmae.guard.predict(batch), lambda: mmae.onnx.predict(batch), "'mmae'", "predict", "flag")
    batch = emma.splits.test
    same_error(lambda: emma.guard.transform(batch), lambda: emma.onnx.transform(batch), "'emma'", "correct")


# ============================================================================ export refusals
class NoHookModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))


class NoHookGuard(Guard):
    """A guard without ``_inference_module`` (never registered)."""

    name = "export_nohook"
    config_class = GuardConfig
    flags = True

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        self.model = NoHookModel()
        return {}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return torch.stack([x.flat(n).abs().amax(1) for n in self.names], 1)


def test_a_guard_without_the_hook_is_a_one_line_spec_error(get_exported, tmp_path: Path) -> None:
    splits = make_splits(get_exported("mmae", "vector").splits.train, seed=0)
    guard = NoHookGuard({"drift": None})
    guard.fit(splits, seed=0)
    with pytest.raises(SpecError) as exc:
        export_onnx(guard, tmp_path / "m.onnx")
    one_line(exc.value, "'export_nohook'", "_inference_module")
    assert not (tmp_path / "m.onnx").exists()


def test_unfitted_guard_and_directory_output_are_refused(get_exported, tmp_path: Path) -> None:
    with pytest.raises(NotFittedError) as exc:
        export_onnx(create_guard("mmae", quick=True), tmp_path / "m.onnx")
    one_line(exc.value, "'mmae'", "not fitted")
    with pytest.raises(SpecError) as exc2:
        export_onnx(get_exported("mmae", "vector").guard, tmp_path)
    one_line(exc2.value, "directory")
    assert list(tmp_path.iterdir()) == []


# ============================================================================ load refusals
def test_files_that_are_not_mmguard_models_are_refused(tmp_path: Path, get_exported) -> None:
    with pytest.raises(CheckpointError) as exc:
        OnnxGuard(tmp_path / "nowhere.onnx")
    one_line(exc.value, "does not exist")
    with pytest.raises(CheckpointError) as exc:
        OnnxGuard(tmp_path)
    one_line(exc.value, "not a file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    with pytest.raises(CheckpointError) as exc:
        OnnxGuard(garbage)
    one_line(exc.value, "not a readable ONNX model")
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    plain = tmp_path / "plain.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(plain))
    with pytest.raises(CheckpointError) as exc:
        OnnxGuard(plain)
    one_line(exc.value, "not exported by mmguard")
    with pytest.raises(SpecError) as exc2:
        OnnxGuard(get_exported("mmae", "vector").onnx_path, threads=0)
    one_line(exc2.value, "threads")


def test_check_matches_refuses_another_guard(get_exported) -> None:
    mmae, mmssl = get_exported("mmae", "vector"), get_exported("mmssl", "image")
    mmae.onnx.check_matches(mmae.guard)
    with pytest.raises(SpecError) as exc:
        mmae.onnx.check_matches(mmssl.guard)
    one_line(exc.value, "'mmae'", "'mmssl'")
