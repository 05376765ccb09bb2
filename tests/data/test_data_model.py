"""The multimodal data model: construction checks, select/concat/collate, fault codes, finiteness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmguard.data import (
    ModalityKind,
    ModalitySpec,
    MultimodalBatch,
    MultimodalDataset,
    collate,
    concat_batches,
    infer_spec,
)
from mmguard.errors import DataError, SpecError


def small_batch(n: int = 6) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    return MultimodalBatch.from_arrays(
        {"vec": torch.randn(n, 3, generator=g), "ts": torch.randn(n, 5, 2, generator=g),
         "img": torch.rand(n, 1, 4, 4, generator=g)},
        target=torch.arange(n) % 2,
        meta={"episode": np.arange(n) // 2, "t": np.arange(n) % 2},
    )


def faulty(batch: MultimodalBatch, modality: int, rows: list[int], vocab: tuple[str, ...],
           code: int) -> MultimodalBatch:
    mask = torch.zeros(len(batch), batch.num_modalities, dtype=torch.bool)
    codes = torch.full((len(batch), batch.num_modalities), -1, dtype=torch.long)
    mask[rows, modality] = True
    codes[rows, modality] = code
    return batch.with_faults(mask, codes, vocab)


def test_kinds_inferred_from_ndim() -> None:
    b = small_batch()
    assert [s.kind for s in b.specs] == [ModalityKind.VECTOR, ModalityKind.TIMESERIES, ModalityKind.IMAGE]
    assert b.spec("ts").shape == (5, 2) and b.spec("img").size == 16
    assert b.names == ("vec", "ts", "img") and len(b) == 6
    assert b.concat_flat().shape == (6, 3 + 10 + 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "", "kind": "vector", "shape": (3,)}, "non-empty"),
        ({"name": "a", "kind": "vector", "shape": (3, 2)}, "needs 1 positive dims"),
        ({"name": "a", "kind": "image", "shape": (3, 0, 2)}, "needs 3 positive dims"),
        ({"name": "a", "kind": "audio", "shape": (3,)}, "unknown kind 'audio'"),
    ],
)
def test_spec_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ModalitySpec(**kwargs)


def test_spec_dict_round_trip_and_malformed() -> None:
    spec = ModalitySpec("ip", ModalityKind.VECTOR, (4,), channels=("a", "b", "c", "d"))
    assert ModalitySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="malformed"):
        ModalitySpec.from_dict({"name": "x"})


def test_infer_spec_rejects_high_rank() -> None:
    with pytest.raises(DataError, match="cannot infer a kind"):
        infer_spec("x", np.zeros((2, 1, 1, 1, 1)))


def test_construction_errors() -> None:
    x = torch.zeros(4, 3)
    spec = ModalitySpec("a", "vector", (3,))
    with pytest.raises(DataError, match=r"expected per-sample shape \(3,\), got \(2,\)"):
        MultimodalBatch({"a": torch.zeros(4, 2)}, (spec,))
    with pytest.raises(SpecError, match="do not match specs"):
        MultimodalBatch({"b": x}, (spec,))
    with pytest.raises(DataError, match="'b' has 5 samples, expected 4"):
        MultimodalBatch({"a": x, "b": torch.zeros(5, 3)}, (spec, ModalitySpec("b", "vector", (3,))))
    with pytest.raises(DataError, match="target has 3 samples"):
        MultimodalBatch({"a": x}, (spec,), target=torch.zeros(3))
    with pytest.raises(DataError, match="must be a torch.Tensor"):
        MultimodalBatch({"a": np.zeros((4, 3))}, (spec,))
    with pytest.raises(DataError, match="meta 'episode' has 2 entries"):
        MultimodalBatch({"a": x}, (spec,), meta={"episode": torch.zeros(2)})
    with pytest.raises(DataError, match=r"expected an \(N, ...\) array"):
        MultimodalBatch.from_arrays({"a": np.zeros(4)})


def test_fault_annotation_invariants() -> None:
    b = small_batch(4)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    codes = torch.full((4, 3), -1)
    mask[0, 1] = True
    with pytest.raises(DataError, match="exactly where fault_mask"):
        b.with_faults(mask, codes, ("noise",))
    codes[0, 1] = 1
    with pytest.raises(DataError, match="outside fault_vocab"):
        b.with_faults(mask, codes, ("noise",))
    with pytest.raises(DataError, match="bool of shape"):
        b.with_faults(mask.long(), codes, ("noise",))
    with pytest.raises(DataError, match="without fault_mask"):
        MultimodalBatch(b.modalities, b.specs, fault_codes=codes)
    codes[0, 1] = 0
    fb = b.with_faults(mask, codes, ("noise",))
    assert fb.fault_type_of(0, "ts") == "noise" and fb.fault_type_of(0, "vec") is None
    assert fb.clean_view().fault_mask is None


def test_select_keeps_everything_aligned() -> None:
    b = faulty(small_batch(), 0, [1, 4], ("drift",), 0)
    sub = b.select([4, 1])
    assert torch.equal(sub.modalities["vec"], b.modalities["vec"][[4, 1]])
    assert sub.target.tolist() == [0, 1] and sub.meta["episode"].tolist() == [2, 0]
    assert sub.fault_mask[:, 0].all()
    by_mask = b.select(np.array([True, False, False, False, True, False]))
    assert len(by_mask) == 2 and by_mask.meta["t"].tolist() == [0, 0]
    assert len(b.select([True, False, True, False, False, False])) == 2  # list of bools is a mask
    assert len(b.select([])) == 0
    assert len(b[1:3]) == 2
    assert torch.equal(b[-1].modalities["img"], b.modalities["img"][5:6])
    with pytest.raises(IndexError):
        b[6]


def test_operations_do_not_modify_the_source() -> None:
    b = small_batch()
    before = b.modalities["vec"].clone()
    changed = b.with_modalities({"vec": b.modalities["vec"] + 1})
    assert torch.equal(b.modalities["vec"], before)
    assert torch.equal(changed.modalities["vec"], before + 1)
    with pytest.raises(SpecError, match="unknown modality 'nope'"):
        b.with_modalities({"nope": before})


def test_concat_remaps_fault_codes_to_merged_vocab() -> None:
    b = small_batch(4)
    first = faulty(b, 0, [0], ("noise", "drift"), 1)  # drift
    second = faulty(b, 2, [3], ("drift", "stuck"), 1)  # stuck
    cat = concat_batches([first, second, b])
    assert cat.fault_vocab == ("noise", "drift", "stuck")
    assert len(cat) == 12
    assert cat.fault_type_of(0, "vec") == "drift"
    assert cat.fault_type_of(7, "img") == "stuck"
    assert int(cat.fault_mask.sum()) == 2 and not cat.fault_mask[8:].any()
    assert torch.equal(cat.meta["episode"][:4], b.meta["episode"])


def test_concat_errors() -> None:
    b = small_batch(2)
    with pytest.raises(DataError, match="empty list"):
        concat_batches([])
    other = MultimodalBatch.from_arrays({"vec": torch.zeros(2, 3)})
    with pytest.raises(DataError, match="different modalities"):
        concat_batches([b, other])
    unlabelled = MultimodalBatch(b.modalities, b.specs, meta=b.meta)
    with pytest.raises(DataError, match="only some carry a target"):
        concat_batches([b, unlabelled])


def test_dataloader_with_collate() -> None:
    b = faulty(small_batch(6), 1, [2], ("freeze",), 0)
    loader = DataLoader(MultimodalDataset(b), batch_size=4, shuffle=False, collate_fn=collate)
    parts = list(loader)
    assert [len(p) for p in parts] == [4, 2]
    rebuilt = concat_batches(parts)
    assert torch.equal(rebuilt.modalities["ts"], b.modalities["ts"])
    assert torch.equal(rebuilt.fault_codes, b.fault_codes) and rebuilt.fault_vocab == ("freeze",)


def test_iter_minibatches() -> None:
    b = small_batch(5)
    sizes = [len(m) for m in b.iter_minibatches(2)]
    assert sizes == [2, 2, 1]
    shuffled = list(b.iter_minibatches(5, shuffle=True, generator=torch.Generator().manual_seed(1)))
    assert sorted(shuffled[0].target.tolist()) == sorted(b.target.tolist())
    with pytest.raises(DataError, match="batch_size must be positive"):
        list(b.iter_minibatches(0))


def test_check_finite_names_modality_and_sample() -> None:
    b = small_batch(4)
    b.check_finite()
    bad = b.modalities["ts"].clone()
    bad[2, 3, 1] = float("nan")
    expected = r"^model input: modality 'ts' contains NaN/Inf \(first at sample 2\)$"
    with pytest.raises(DataError, match=expected):
        b.with_modalities({"ts": bad}).check_finite("model input")
