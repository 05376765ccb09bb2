"""Bring-your-own data: CSV/Parquet + YAML mapping, NPZ/HDF5 arrays, with the docs' worked example."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmguard.data import (
    ModalityKind,
    MultimodalBatch,
    load_arrays,
    load_dataset,
    load_tabular,
    make_shared_latent,
    read_tabular,
    save_arrays,
    split_by_group,
)
from mmguard.errors import DataError, SpecError

# The worked example of docs/data.md: a robot arm logging an IMU and two joint angles, labelled
# with whether the gripper is in contact, in episodes ("runs") of time steps.
ROBOT_CSV = """run,step,ax,ay,az,q1,q2,contact
r1,0,0.10,0.00,9.81,0.50,1.20,no
r1,1,0.12,0.01,9.80,0.52,1.18,no
r1,2,0.40,0.05,9.60,0.60,1.10,yes
r2,0,0.00,0.02,9.82,0.10,0.90,no
r2,1,0.05,0.03,9.79,0.15,0.95,yes
r2,2,0.30,0.04,9.70,0.20,1.00,yes
r3,0,0.02,0.00,9.81,0.30,1.30,no
r3,1,0.08,0.01,9.77,0.35,1.25,yes
"""
ROBOT_YAML = """\
modalities:
  imu: [ax, ay, az]          # a list of columns is a vector modality
  joint:
    columns: ["q*"]          # glob patterns expand in table order
    kind: vector
target: contact              # labels "no"/"yes" become 0/1 (sorted)
meta: {episode: run, t: step}
"""


@pytest.fixture
def robot(tmp_path: Path) -> tuple[Path, Path]:
    table, mapping = tmp_path / "robot.csv", tmp_path / "robot.yaml"
    table.write_text(ROBOT_CSV)
    mapping.write_text(ROBOT_YAML)
    return table, mapping


def test_worked_example_csv(robot: tuple[Path, Path]) -> None:
    table, mapping = robot
    data = read_tabular(table, mapping)
    b = data.batch
    assert data.task == "binary" and data.classes == ("no", "yes")
    assert b.names == ("imu", "joint") and len(b) == 8
    assert b.spec("imu").channels == ("ax", "ay", "az") and b.spec("joint").channels == ("q1", "q2")
    assert b.target.tolist() == [0, 0, 1, 0, 1, 1, 0, 1] and b.target.dtype == torch.int64
    assert b.meta["episode"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2] and b.meta["t"].tolist()[:3] == [0, 1, 2]
    assert b.modalities["imu"][2].tolist() == pytest.approx([0.40, 0.05, 9.60])
    s = split_by_group(b, "episode")
    assert sorted(len(set(p.meta["episode"].tolist())) for p in (s.train, s.val, s.test)) == [1, 1, 1]
    assert torch.equal(load_dataset(f"csv:{table}", mapping=mapping).concat_flat(), b.concat_flat())


def test_parquet_round_trip_matches_csv(robot: tuple[Path, Path], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table, mapping = robot
    arrow = pacsv.read_csv(table)
    pq.write_table(arrow, tmp_path / "robot.parquet")
    from_parquet = load_tabular(tmp_path / "robot.parquet", mapping)
    from_csv = load_tabular(table, mapping)
    assert torch.allclose(from_parquet.concat_flat(), from_csv.concat_flat())
    assert torch.equal(from_parquet.target, from_csv.target)
    assert torch.equal(from_parquet.meta["episode"], from_csv.meta["episode"])
    nulls = arrow.set_column(2, "ax", pa.array([None] + [0.1] * 7, pa.float64()))
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    with pytest.raises(DataError, match=r"column 'ax' row 0 is empty \(null\)"):
        load_tabular(tmp_path / "nulls.parquet", mapping)


def test_timeseries_from_columns_and_inferred_tasks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 30
    cols = {f"s{t}_{c}": rng.standard_normal(n) for t in range(4) for c in "xy"}
    cols["score"] = rng.standard_normal(n)
    cols["grade"] = rng.integers(0, 3, n).astype(float)
    header = ",".join(cols)
    rows = "\n".join(",".join(repr(float(cols[k][i])) for k in cols) for i in range(n))
    (tmp_path / "t.csv").write_text(header + "\n" + rows + "\n")
    mapping = {"modalities": {"seq": {"columns": ["s?_*"], "kind": "timeseries", "shape": [4, 2],
                                      "channels": ["x", "y"]}}, "target": "score"}
    data = read_tabular(tmp_path / "t.csv", mapping)
    assert data.task == "regression" and data.batch.target.dtype == torch.float32
    seq = data.batch.spec("seq")
    assert seq.kind is ModalityKind.TIMESERIES and seq.shape == (4, 2) and seq.channels == ("x", "y")
    assert data.batch.modalities["seq"][5, 2, 1].item() == pytest.approx(cols["s2_y"][5], rel=1e-6)
    graded = read_tabular(tmp_path / "t.csv", {**mapping, "target": "grade"})
    assert graded.task == "multiclass" and set(graded.batch.target.tolist()) <= {0, 1, 2}
    as_reg = read_tabular(tmp_path / "t.csv", {**mapping, "target": "grade", "task": "regression"})
    assert as_reg.task == "regression"
    unlabelled = read_tabular(tmp_path / "t.csv", {**mapping, "target": None})
    assert unlabelled.batch.target is None and unlabelled.task is None


def csv_error(tmp_path: Path, csv_text: str, mapping: dict | str) -> str:
    (tmp_path / "d.csv").write_text(csv_text)
    if isinstance(mapping, str):
        (tmp_path / "m.yaml").write_text(mapping)
        mapping = tmp_path / "m.yaml"
    with pytest.raises((DataError, SpecError)) as info:
        load_tabular(tmp_path / "d.csv", mapping)
    message = str(info.value)
    assert "\n" not in message
    return message


GOOD_CSV = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,0\n"


@pytest.mark.parametrize(
    ("csv_text", "mapping", "expected"),
    [
        (GOOD_CSV, {"modalities": {"m": ["a", "zz"]}, "target": "y"}, "column 'zz' (modality 'm') not found"),
        (GOOD_CSV, {"modalities": {"m": ["q*"]}, "target": "y"},
         "pattern 'q*' (modality 'm') matches no column"),
        (GOOD_CSV, {"modalities": {"m": ["a"]}, "target": "label"}, "target column 'label' not found"),
        (GOOD_CSV, {"modalities": {"m": ["a"]}}, "no 'target' column given"),
        (GOOD_CSV, {"modalities": {"m": ["a", "y"]}, "target": "y"}, "column 'y' is used by both the target"),
        (GOOD_CSV, {"modalities": {"m": ["a"], "n": ["a"]}, "target": "y"}, "used by both modality 'm'"),
        ("a,b,c,y\n1,2,3,0\n4,nan,6,1\n", {"modalities": {"m": ["a", "b"]}, "target": "y"},
         r"column 'b' row 1 (line 3) is not finite: nan"),
        ("a,b,c,y\n1,2,3,0\n4,,6,1\n", {"modalities": {"m": ["a", "b"]}, "target": "y"},
         "column 'b' row 1 (line 3) is not a number: ''"),
        ("a,b,c,y\n1,2,3,0\n4,5,1\n", {"modalities": {"m": ["a"]}, "target": "y"},
         "row 1 (line 3) has 3 fields, the header has 4"),
        (GOOD_CSV, {"modalities": {"m": ["a"]}, "target": "y", "task": "ordinal"}, "unknown task 'ordinal'"),
        (GOOD_CSV, {"modalities": {"m": ["a"]}, "target": "y", "extra": 1}, "unknown key 'extra'"),
        (GOOD_CSV, {"modalities": {"m": {"columns": ["a"], "kind": "audio"}}, "target": "y"},
         "unknown kind 'audio'"),
        (GOOD_CSV, {"modalities": {"m": {"columns": ["a", "b"], "kind": "timeseries"}}, "target": "y"},
         "needs a 'shape'"),
        (GOOD_CSV, {"modalities": {"m": {"columns": ["a", "b", "c"], "kind": "timeseries", "shape": [2, 2]}},
                    "target": "y"}, "3 columns, which cannot fill shape [2, 2]"),
        (GOOD_CSV, {"modalities": {"m": ["a"]}, "target": "c", "task": "binary"},
         "a binary target needs exactly 2 classes, got 3"),
        ("a,y\n1,0\n2,0\n", {"modalities": {"m": ["a"]}, "target": "y"}, "at least 2 classes, got only [0]"),
        ("a,y\n1,0.5\n2,nan\n", {"modalities": {"m": ["a"]}, "target": "y"}, "target row 1 is not finite"),
        (GOOD_CSV, "modalities: [a, b\n", "is not valid YAML"),
        (GOOD_CSV, "- just\n- a list\n", "a mapping must be a YAML mapping"),
        ("", {"modalities": {"m": ["a"]}, "target": "y"}, "file is empty"),
        ("a,a,y\n1,2,0\n", {"modalities": {"m": ["a"]}, "target": "y"}, "duplicate column name 'a'"),
    ],
)
def test_tabular_errors_are_one_line(tmp_path: Path, csv_text: str, mapping, expected: str) -> None:
    assert expected in csv_error(tmp_path, csv_text, mapping)


def test_tabular_missing_files(tmp_path: Path, robot: tuple[Path, Path]) -> None:
    table, mapping = robot
    with pytest.raises(DataError, match="mapping file not found"):
        load_tabular(table, tmp_path / "none.yaml")
    with pytest.raises(DataError, match="table not found"):
        load_tabular(tmp_path / "none.csv", mapping)
    (tmp_path / "robot.xlsx").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_tabular(tmp_path / "robot.xlsx", mapping)


# ---------------------------------------------------------------------------- arrays
def multikind_batch() -> MultimodalBatch:
    rng = np.random.default_rng(0)
    n = 12
    return MultimodalBatch.from_arrays(
        {"pose": rng.standard_normal((n, 6)), "force": rng.standard_normal((n, 10, 3)),
         "cam": rng.random((n, 3, 8, 8))},
        target=np.arange(n) % 3,
        meta={"episode": np.arange(n) // 4, "t": np.arange(n) % 4},
    )


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_arrays_round_trip(tmp_path: Path, suffix: str) -> None:
    b = multikind_batch()
    path = save_arrays(b, tmp_path / f"robot{suffix}")
    back = load_arrays(path)
    assert back.names == b.names and back.specs == b.specs
    assert torch.equal(back.concat_flat(), b.concat_flat())
    assert torch.equal(back.target, b.target) and back.target.dtype == torch.int64
    assert torch.equal(back.meta["episode"], b.meta["episode"]) and torch.equal(back.meta["t"], b.meta["t"])
    scheme = "npz" if suffix == ".npz" else "h5"
    assert torch.equal(load_dataset(f"{scheme}:{path}").modalities["cam"], b.modalities["cam"])


def test_worked_example_npz(tmp_path: Path) -> None:
    n = 100
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "robot.npz",
        imu=rng.standard_normal((n, 3)),  # (N, 3): vector
        force=rng.standard_normal((n, 20, 6)),  # (N, T, D): timeseries
        camera=rng.random((n, 1, 16, 16)),  # (N, C, H, W): image
        target=rng.integers(0, 2, n),
        **{"meta/episode": np.arange(n) // 10, "meta/t": np.arange(n) % 10},
    )
    b = load_dataset(f"npz:{tmp_path / 'robot.npz'}")
    assert [s.kind.value for s in b.specs] == ["vector", "timeseries", "image"]
    assert b.meta["episode"].max().item() == 9


def test_h5_kind_attribute_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.zeros((5, 4, 2)))
        f["a"].attrs["kind"] = "timeseries"
        f.create_dataset("b", data=np.ones((5, 3)))
        f["b"].attrs["channels"] = ["u", "v", "w"]
        f.create_dataset("target", data=np.array([0.5, 1.5, 2.5, 3.5, 4.5]))
    b = load_arrays(path)
    assert b.spec("a").kind is ModalityKind.TIMESERIES and b.spec("b").channels == ("u", "v", "w")
    assert b.target.dtype == torch.float32  # fractional: regression
    with h5py.File(path, "a") as f:
        f["a"].attrs["kind"] = "image"
    with pytest.raises(DataError, match="a image needs 3 positive dims"):
        load_arrays(path)


def test_npz_without_target_and_scalar_modality(tmp_path: Path) -> None:
    np.savez(tmp_path / "u.npz", a=np.arange(5.0), b=np.zeros((5, 2)))
    b = load_arrays(tmp_path / "u.npz")
    assert b.target is None and b.spec("a").shape == (1,)
    with pytest.raises(DataError, match="target array 'label' not found"):
        load_arrays(tmp_path / "u.npz", target_key="label")


def array_error(tmp_path: Path, **arrays) -> str:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_arrays(tmp_path / "bad.npz")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_array_errors(tmp_path: Path) -> None:
    ok = np.zeros((4, 2))
    assert "modality 'b' has 5 samples but 'a' has 4" in array_error(tmp_path, a=ok, b=np.zeros((5, 2)))
    nan = ok.copy()
    nan[3, 1] = np.nan
    assert "modality 'a' contains NaN/Inf (first at sample 3)" in array_error(tmp_path, a=nan)
    assert "target 'target' has 3 entries, expected 4" in array_error(tmp_path, a=ok, target=np.zeros(3))
    assert "must be numeric" in array_error(tmp_path, a=np.array([["x"], ["y"]]))
    assert "meta 'episode' must be a numeric (N,) array" in array_error(
        tmp_path, a=ok, **{"meta/episode": np.zeros(2)})
    assert "cannot infer a kind" in array_error(tmp_path, a=np.zeros((2, 1, 1, 1, 1)))
    assert "no modality arrays" in array_error(tmp_path, target=np.zeros(3))
    with pytest.raises(DataError, match="holds Python objects"):
        np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
        load_arrays(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read NPZ"):
        load_arrays(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="array file not found"):
        load_arrays(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("extra").create_dataset("x", data=ok)
    with pytest.raises(DataError, match="unexpected group 'extra'"):
        load_arrays(tmp_path / "g.h5")


def test_save_arrays_rejects_reserved_names(tmp_path: Path) -> None:
    b = MultimodalBatch.from_arrays({"target": np.zeros((3, 2))})
    with pytest.raises(DataError, match="clashes with the reserved"):
        save_arrays(b, tmp_path / "x.npz")


def test_shared_latent_survives_a_round_trip(tmp_path: Path) -> None:
    b = make_shared_latent(64, modality_dims=(2, 3, 4, 5), episode_length=8, seed=3)
    back = load_arrays(save_arrays(b, tmp_path / "toy.h5"))
    assert back.names == ("m0", "m1", "m2", "m3") and torch.equal(back.concat_flat(), b.concat_flat())
