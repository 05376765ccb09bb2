"""Every registered guard, exported to ONNX and run by ONNX Runtime, gives the torch guard's numbers
(tolerances: tests/export/export_testutil.py, docs/export.md) on clean and on faulty batches, at
any batch size; the graph is one self-contained file with one float32 input per modality, a dynamic
batch axis, the documented outputs and mmguard metadata."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from export_testutil import cases, faulty, parity

import mmguard
import mmguard.export.runtime as runtime

CASES = [pytest.param(c, id=f"{c[0]}-{c[1]}") for c in cases()]


@pytest.mark.parametrize("case", CASES)
def test_parity_on_clean_and_faulty_batches(case, get_exported, capsys, record_property) -> None:
    e = get_exported(*case)
    test = e.splits.test
    reports = {"clean": parity(e.guard, e.onnx, test), "faulty": parity(e.guard, e.onnx, faulty(test)),
               "batch1": parity(e.guard, e.onnx, faulty(test).select(slice(3, 4)))}
    record_property("parity", json.dumps(reports))
    with capsys.disabled():
        for label, rep in reports.items():
            diffs = ", ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in rep.items())
            print(f"\n[export parity] {e.name}-{e.kind} {label} (n={len(test) if label != 'batch1' else 1}): {diffs}")


@pytest.mark.parametrize("case", CASES)
def test_graph_inputs_outputs_and_metadata(case, get_exported) -> None:
    e = get_exported(*case)
    g = e.guard
    assert sorted(p.name for p in e.onnx_path.parent.iterdir() if p.name != "guard") == ["model.onnx"]  # one file
    model = onnx.load(str(e.onnx_path))
    inputs = model.graph.input
    assert [i.name for i in inputs] == list(g.names)
    for i, s in zip(inputs, g.specs, strict=True):
        t = i.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        dims = t.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch axis
        assert [d.dim_value for d in dims[1:]] == list(s.shape)
    expected = (["scores", "flags"] if g.flags else []) + ([f"fixed:{n}" for n in g.names] if g.corrects else []) \
        + (["prediction"] if g.predicts else [])
    assert [o.name for o in model.graph.output] == expected
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types.get("flags", onnx.TensorProto.BOOL) == onnx.TensorProto.BOOL
    assert types.get("prediction", onnx.TensorProto.INT64) == onnx.TensorProto.INT64
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mmguard.kind"] == g.name and meta["mmguard.version"] == mmguard.__version__
    assert json.loads(meta["mmguard.capabilities"]) == g.capabilities()
    assert json.loads(meta["mmguard.modalities"]) == [s.to_dict() for s in g.specs]
    assert json.loads(meta["mmguard.outputs"]) == expected
    assert e.onnx.capabilities() == g.capabilities() and e.onnx.specs == g.specs and e.onnx.name == g.name


def test_chunked_runs_equal_one_run(get_exported, monkeypatch) -> None:
    e = get_exported("mmssl", "image")
    batch = faulty(e.splits.test)
    whole = e.onnx.run(batch)
    monkeypatch.setattr(runtime, "INFERENCE_CHUNK", 7)
    chunked = e.onnx.run(batch)
    for k in whole:
        assert whole[k].shape == chunked[k].shape, k
        assert float(abs(whole[k].astype("float64") - chunked[k].astype("float64")).max()) <= 1e-5, k


def test_transform_keeps_dtype_target_and_meta(get_exported) -> None:
    e = get_exported("mmae", "vector")
    batch = e.splits.test
    batch64 = batch.with_modalities({n: batch.modalities[n].double() for n in batch.names})
    out = e.onnx.transform(batch64)
    assert all(out.modalities[n].dtype == torch.float64 for n in out.names)
    assert torch.equal(out.target, batch.target) and set(out.meta) == set(batch.meta)


def test_an_adapted_guard_exports_its_adapted_statistics(get_exported, tmp_path) -> None:
    """After ``adapt(window)`` the graph standardises with the window's statistics and returns
    corrections in training units, as the torch guard does (metadata ``mmguard.adapted``)."""
    from mmguard.export.onnx import export_onnx
    from mmguard.export.runtime import OnnxGuard

    e = get_exported("mmae", "vector")
    shifted = e.splits.test.with_modalities({"v1": e.splits.test.modalities["v1"] * 1.1 + 7.0})
    e.guard.adapt(shifted)
    try:
        og = OnnxGuard(export_onnx(e.guard, tmp_path / "adapted.onnx"))
        assert og.metadata["mmguard.adapted"] == "true"
        parity(e.guard, og, shifted)
        assert float((og.score(shifted) - e.onnx.score(shifted)).abs().max()) > 1e-3  # not the unadapted graph
    finally:
        e.guard.reset_adaptation()
