"""Datasets larger than memory (issue #13): streamed sources, splits, statistics, shuffling, the loop's
streamed path, ``Guard.fit_stream``, streamed evaluation and the ``--stream`` CLI.

Twin files here come from a smooth fake simulator (no MuJoCo): a twin file's layout with frames
that compress like rendered ones.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmguard.data.arrays import array_source, load_arrays, save_array_chunks, save_arrays
from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import make_splits
from mmguard.data.stream import (
    TensorSource,
    block_order,
    chunk_bounds,
    iter_chunks,
    shuffled_minibatches,
    stream_splits,
)
from mmguard.errors import DataError, SpecError
from mmguard.twin.dataset import load_twin
from mmguard.twin.interface import CameraConfig, Episode
from mmguard.twin.storage import generate
from mmguard.twin.stream import twin_source, twin_source_uri
from support import one_line


def smooth_simulate(scene: str, seed: int, steps: int, camera: CameraConfig) -> Episode:
    """A deterministic fake episode: moving gradients as frames, random-walk joints."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    yy, xx = np.meshgrid(np.arange(camera.height), np.arange(camera.width), indexing="ij")
    phase = rng.uniform(0, 6.28)
    frames = np.stack([
        127 + 100 * np.sin(0.2 * xx[None] + 0.1 * c * yy[None] + 0.05 * t[:, None, None] + phase)
        for c in range(3)], axis=1).astype(np.uint8)
    joints = np.cumsum(rng.normal(0, 0.05, size=(steps, 5)), axis=0).astype(np.float32)
    seam = np.abs(np.cumsum(rng.normal(0, 0.001, size=steps))).astype(np.float32)
    return Episode(
        modalities={"camera": frames, "kinematics": joints},
        targets={"seam_distance": seam, "quality": (seam > 0.002).astype(np.int64),
                 "phase": (t * 3 // steps).astype(np.int64)},
        channels={"kinematics": [f"q{i}" for i in range(5)]}, units={"kinematics": ["rad"] * 5},
        phase_names=["approach", "process", "retract"],
        attrs={"scene": scene, "mjcf_sha256": "cd" * 32, "generator_version": "smooth-1", "seed": seed,
               "camera_width": camera.width, "camera_height": camera.height, "tolerance": 0.002,
               "timestep": 0.002, "control_period": 0.02},
    )


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "arm.h5"
    return generate("arm", 12, 20, out, seed=4, camera=CameraConfig(64, 64), simulate=smooth_simulate)


# ====================================================================== sources
def test_twin_source_reads_what_load_twin_loads(twin: Path) -> None:
    full = load_twin(twin, target="phase", tasks=["seam_distance"])
    src = twin_source(twin, target="phase", tasks=["seam_distance"])
    assert len(src) == len(full) == 240 and src.specs == full.specs
    rows = np.array([239, 0, 17, 100, 3, 58])  # any order, across storage blocks
    got, want = src.read(rows), full.select(torch.from_numpy(rows))
    for n in full.names:
        assert torch.equal(got.modalities[n], want.modalities[n])  # bit for bit, uint8 / 255 included
    assert torch.equal(got.target, want.target)
    assert set(got.meta) == set(want.meta) and all(torch.equal(got.meta[k], want.meta[k]) for k in want.meta)
    # an episode selection, a subset, and a pickled copy (Ray tasks, spawned ranks) read the same rows
    sub = twin_source_uri(f"{twin}?episodes=2-4&target=quality")
    want_sub = load_twin(twin, episodes=[2, 3, 4])
    assert torch.equal(sub.read(slice(0, 60)).modalities["camera"], want_sub.modalities["camera"])
    copy = pickle.loads(pickle.dumps(src.subset(np.arange(40, 80))))
    assert torch.equal(copy.read(np.arange(40)).modalities["kinematics"],
                       full.modalities["kinematics"][40:80])


def test_source_errors_are_one_line(twin: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        twin_source(twin, modalities=["lidar"])
    one_line(e.value, "lidar")
    with pytest.raises(DataError) as e:
        twin_source(tmp_path / "missing.h5")
    one_line(e.value, "not found")
    src = twin_source(twin)
    with pytest.raises(SpecError) as e:
        src.read(np.array([3, 3]))
    one_line(e.value, "twice")
    with pytest.raises(DataError) as e:
        src.meta("batch")
    one_line(e.value, "batch")


def test_array_source_and_chunked_writer_round_trip(twin: Path, tmp_path: Path) -> None:
    batch = load_twin(twin, target=None)
    path = save_arrays(batch, tmp_path / "a.h5")
    src = array_source(path)
    assert src.specs == load_arrays(path).specs
    assert torch.equal(src.read(np.arange(len(src))).modalities["camera"], batch.modalities["camera"])
    n = save_array_chunks(iter_chunks(src, 50), tmp_path / "b.h5")  # written one chunk at a time
    again = load_arrays(tmp_path / "b.h5")
    assert n == len(batch) and torch.equal(again.modalities["camera"], batch.modalities["camera"])
    assert torch.equal(again.meta["episode"], batch.meta["episode"])

    other = load_twin(twin, target=None, modalities=["camera"])

    def mismatched():
        yield batch.select(slice(0, 10))
        yield other.select(slice(0, 10))

    with pytest.raises(DataError) as e:
        save_array_chunks(mismatched(), tmp_path / "c.h5")
    one_line(e.value, "same modalities")
    assert not (tmp_path / "c.h5").exists()  # nothing half-written
    with pytest.raises(DataError):
        array_source(tmp_path / "nope.h5")


# ====================================================================== splits and statistics
def test_stream_splits_equal_the_loaded_splits(twin: Path) -> None:
    batch = load_twin(twin, target=None)
    src = twin_source(twin, target=None)
    for seed in (0, 3):
        loaded = make_splits(batch, seed=seed)
        parts = stream_splits(src, seed=seed)
        for part, want in zip(parts, (loaded.train, loaded.val, loaded.test), strict=True):
            assert torch.equal(torch.from_numpy(part.meta("episode")), want.meta["episode"])
            assert torch.equal(torch.from_numpy(part.meta("t")), want.meta["t"])
    train, val, test = stream_splits(src, train_groups=[0, 1, 2, 3, 4, 5], val_groups=[6, 7], test_groups=[8])
    assert (len(train), len(val), len(test)) == (120, 40, 20)
    with pytest.raises(SpecError) as e:
        stream_splits(src, train_groups=[0], test_groups=[1])
    one_line(e.value, "--val-groups")
    with pytest.raises(SpecError):
        stream_splits(src, split_by="random")
    with pytest.raises(DataError) as e:
        stream_splits(src, train_groups=[0], val_groups=[1], test_groups=[99])
    one_line(e.value, "99")


def test_chunked_statistics_equal_the_whole_split(twin: Path) -> None:
    batch = load_twin(twin, target=None)
    src = twin_source(twin, target=None)
    whole = Standardizer.fit(batch)
    chunked = Standardizer.fit_chunks(iter_chunks(src, 37))
    for n in batch.names:
        torch.testing.assert_close(chunked.mean[n], whole.mean[n], rtol=0, atol=1e-6)
        torch.testing.assert_close(chunked.std[n], whole.std[n], rtol=1e-6, atol=1e-7)


def test_chunks_end_on_episode_boundaries(twin: Path) -> None:
    src = twin_source(twin, target=None)
    episodes = src.meta("episode")
    for rows in (1, 20, 33, 100, 1000):
        bounds = chunk_bounds(src, rows)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(src)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        for a, b in bounds:
            assert a == 0 or episodes[a] != episodes[a - 1]  # a chunk starts where an episode starts
            assert b - a <= max(rows, 20)  # never more than chunk_rows, unless one episode is longer
    from mmguard.data.model import MultimodalBatch

    plain = TensorSource(MultimodalBatch.from_arrays({"x": torch.zeros(150, 2)}))  # no episodes: fixed sizes
    assert chunk_bounds(plain, 64) == [(0, 64), (64, 128), (128, 150)]


# ====================================================================== the block shuffle
def test_block_shuffle_visits_every_row_once_in_full_minibatches(twin: Path) -> None:
    src = twin_source(twin, target=None)
    assert src.block_rows == 85
    for buffer_rows in (1, 50, 10_000):  # smaller than a block, several blocks, everything
        gen = torch.Generator().manual_seed(5)
        batches = list(shuffled_minibatches(src, 32, gen, buffer_rows))
        sizes = [len(b) for b in batches]
        assert all(s == 32 for s in sizes[:-1]) and 0 < sizes[-1] <= 32 and sum(sizes) == len(src)
        ids = torch.cat([b.meta["episode"] * 1000 + b.meta["t"] for b in batches])
        assert len(ids.unique()) == len(src)  # each row exactly once
    again = [b.meta["t"] for b in shuffled_minibatches(src, 32, torch.Generator().manual_seed(5), 50)]
    first = [b.meta["t"] for b in shuffled_minibatches(src, 32, torch.Generator().manual_seed(5), 50)]
    other = [b.meta["t"] for b in shuffled_minibatches(src, 32, torch.Generator().manual_seed(6), 50)]
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(again, other, strict=True))


def test_block_order_keeps_blocks_in_one_buffer() -> None:
    from mmguard.data.model import MultimodalBatch

    batch = MultimodalBatch.from_arrays({"x": torch.arange(100.0)[:, None]})
    src = TensorSource(batch, block_rows=10).subset(np.arange(5, 95))  # a split: partial first/last blocks
    buffers = block_order(src, 30, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(buffers).tolist()) == list(range(90))
    storage_blocks = [set((src.rows[b] // 10).tolist()) for b in buffers]
    assert all(len(s) <= 3 for s in storage_blocks)  # 30 rows of 10-row blocks
    assert sum(len(s) for s in storage_blocks) == 10  # no block split over two buffers


# ====================================================================== training and evaluation
def test_loop_streamed_path_equals_the_tensor_path() -> None:
    """The same minibatches handed to the loop as StreamedData or as tensors give the same model."""
    from torch import nn

    from mmguard.train.ensemble import member_generator
    from mmguard.train.loop import StreamedData, gather_stream_batch, train_ensemble

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 70, 4, generator=gen)
    y = x.sum(2, keepdim=True) + 0.1 * torch.randn(1, 70, 1, generator=gen)
    vx, vy = torch.randn(1, 30, 4, generator=gen), torch.randn(1, 30, 1, generator=gen)
    data, val = {"x": x, "y": y}, {"x": vx, "y": vy}

    class Member(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.lin = nn.Linear(4, 1)

    def loss(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return (model.lin(b["x"][0]) - b["y"][0]).pow(2).mean().reshape(1)

    seeds, ms = [11], torch.zeros(1, dtype=torch.long)
    kwargs = dict(member_stream=ms, stream_seeds=seeds, epochs=4, batch_size=16, lr=0.05, patience=None)
    m1 = Member()
    r1 = train_ensemble(m1, loss, data, val, **kwargs)

    orders = member_generator(seeds[0], 7)  # the loop's own minibatch order (order_stream 7)

    def minibatches(epoch: int, size: int):
        perm = torch.randperm(70, generator=orders)
        for a in range(0, 70, size):
            yield gather_stream_batch(data, ms, perm[None, a : a + size])

    def chunks(_e: int, _s: int):
        yield {k: v[:, :13] for k, v in val.items()}
        yield {k: v[:, 13:] for k, v in val.items()}

    m2 = Member()
    r2 = train_ensemble(m2, loss, StreamedData(70, minibatches), StreamedData(30, chunks), **kwargs)
    assert torch.equal(m1.lin.weight, m2.lin.weight)
    torch.testing.assert_close(torch.stack(r1.val_history), torch.stack(r2.val_history), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def streamed_dae(twin: Path):
    from mmguard.guard import create_guard

    src = twin_source(twin, target=None)
    train, val, test = stream_splits(src, seed=0)
    g = create_guard("dae", quick=True, config={"autoencoder": {"epochs": 3, "patience": None,
                                                                "image_channels": [8, 16]},
                                                "calibrate_over": "groups"})
    report = g.fit_stream(train, val, seed=0, buffer_bytes=60 * src.row_bytes(), chunk_bytes=45 * src.row_bytes())
    return g, report, (train, val, test)


def test_fit_stream_trains_calibrates_and_saves(streamed_dae, tmp_path: Path) -> None:
    from mmguard.guard import load_guard

    g, report, (train, val, test) = streamed_dae
    assert train.block_rows == 85  # the camera's storage chunk (~1 MiB of 64x64 frames): 3 blocks in the file
    assert report["streamed"] == {"train": len(train), "val": len(val), "buffer_rows": 85, "chunk_rows": 45}
    hist = report["autoencoder"]["val_history"]
    assert len(hist) == 3 and hist[-1][0] < hist[0][0]  # it learns
    assert report["calibration"]["groups"]  # split-conformal over the validation episodes read from the meta
    g.save(tmp_path / "g")
    again = load_guard(tmp_path / "g")
    batch = test.read(np.arange(len(test)))
    torch.testing.assert_close(again.score(batch), g.score(batch))


def test_fit_stream_refuses_guards_that_do_not_stream(twin: Path) -> None:
    from mmguard.guard import create_guard

    src = twin_source(twin, target=None)
    train, val, _ = stream_splits(src, seed=0)
    with pytest.raises(SpecError) as e:
        create_guard("mmssl", quick=True).fit_stream(train, val)
    one_line(e.value, "does not train from a stream", "dae")


def test_streamed_evaluation_equals_the_in_memory_one(streamed_dae) -> None:
    from mmguard.eval.guard_eval import evaluate_guard
    from mmguard.eval.stream_eval import evaluate_stream
    from mmguard.faults import apply_faults
    from mmguard.faults.scenarios import training_spec

    g, _, (_, _, test) = streamed_dae
    batch = test.read(np.arange(len(test)))
    st = g.standardizer
    clean = evaluate_stream(g, test, None, chunk_rows=7)  # several chunks
    want = evaluate_guard(g, batch, st.transform(batch), st)
    assert clean["n"] == len(test) and clean["n_faulty"] == 0
    assert clean["errors"]["all"]["combined"] == pytest.approx(want["errors"]["all"]["combined"], rel=1e-5)
    assert clean["detection"]["false_alarm_rate"] == pytest.approx(want["detection"]["false_alarm_rate"])
    # one chunk = the whole split: the draw is the in-memory draw with that seed
    from mmguard.seeding import derive_seed

    spec = training_spec(batch)
    one = evaluate_stream(g, test, spec, seed=3, chunk_rows=10_000)
    faulty = st.inverse(apply_faults(st.transform(batch), spec, seed=derive_seed(3, "stream-eval", 0)))
    ref = evaluate_guard(g, faulty, st.transform(batch), st)
    assert one["n_faulty"] == ref["n_faulty"] > 0
    assert one["errors"]["faulty"]["combined"] == pytest.approx(ref["errors"]["faulty"]["combined"], rel=1e-5)
    assert one["detection"]["auroc"] == pytest.approx(ref["detection"]["auroc"])


# ====================================================================== CLI
def test_cli_stream_fit_score_transform(twin: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmguard.cli.main import entrypoint

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"autoencoder": {"epochs": 1, "patience": None, "image_channels": [8]}}))
    out = tmp_path / "g"
    argv = ["fit", "--guard", "mmae", "--data", f"twin:{twin}", "--config", str(cfg), "--out", str(out),
            "--stream", "--buffer-mb", "1", "--json"]
    assert entrypoint(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["streamed"] and summary["sizes"] == {"train": 160, "val": 40, "test": 40}
    assert entrypoint(argv) == 0 and json.loads(capsys.readouterr().out)["skipped"]  # same data: nothing to do

    scores = tmp_path / "s.npz"
    assert entrypoint(["score", str(out), "--data", f"twin:{twin}", "--stream", "--out", str(scores)]) == 0
    with np.load(scores) as z:
        assert z["scores"].shape == (240, 2)
    fixed = tmp_path / "t.h5"
    assert entrypoint(["transform", str(out), "--data", f"twin:{twin}", "--stream", "--out", str(fixed)]) == 0
    capsys.readouterr()
    with h5py.File(fixed, "r") as f:
        assert f["camera"].shape == (240, 3, 64, 64) and f["meta/episode"].shape == (240,)

    # one-line errors, exit code 2
    for bad, words in (
        (["fit", "--guard", "mmssl", "--data", f"twin:{twin}", "--out", str(tmp_path / "x"), "--stream"],
         ["does not train from a stream"]),
        (["fit", "--guard", "dae", "--data", "toy", "--out", str(tmp_path / "y"), "--stream"], ["--stream"]),
        (["transform", str(out), "--data", f"twin:{twin}", "--stream", "--out", str(tmp_path / "t.npz")],
         ["HDF5"]),
    ):
        assert entrypoint(bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mmguard: error:") and "\n" not in err
        for w in words:
            assert w in err, (w, err)
