"""Every endpoint on its happy path gives exactly the numbers of the in-process guard.

A request that is coalesced with nobody is the guard call itself (the batcher calls
``guard.score(batch)`` on the request's own batch), and JSON carries float32 values exactly, so
scores, flags, transforms, predictions and drift ratios are compared with ``torch.equal``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_testutil import NPZ, Fitted, assert_error, json_body, npz_arrays, npz_bytes, rows, serving

import mmguard
from mmguard.data.model import MultimodalBatch


@pytest.fixture(scope="module")
def client(vector: Fitted):
    with serving(vector.directory) as c:
        yield c


def test_health_and_ready(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"ready": True, "kind": "mmae"}


def test_info_describes_the_guard_without_server_paths(client, vector: Fitted) -> None:
    info = client.get("/v1/info").json()
    g = vector.guard
    assert info["kind"] == "mmae" and info["mmguard_version"] == mmguard.__version__
    assert info["capabilities"] == {"flag": True, "correct": True, "predict": False}
    assert [(m["name"], m["kind"], m["shape"]) for m in info["modalities"]] == [
        ("v0", "vector", [4]), ("v1", "vector", [5]), ("v2", "vector", [3])]
    assert info["drift"] == {"window": g.drift_detector.window, "step": g.drift_detector.config.step,
                             "alpha": g.drift_detector.config.alpha}
    assert info["limits"]["max_batch"] == 256
    assert str(vector.directory) not in str(info) and str(vector.directory.parent.name) not in str(info)


def test_score_and_flag_equal_the_guard(client, vector: Fitted) -> None:
    batch = rows(vector.splits.test, 0, 37)
    r = client.post("/v1/score", json=json_body(batch))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["modalities"] == ["v0", "v1", "v2"] and body["threshold"] == 1.0
    expected = vector.guard.score(batch)
    assert torch.equal(torch.tensor(body["scores"], dtype=torch.float32), expected)
    r = client.post("/v1/flag", json=json_body(batch))
    assert r.status_code == 200
    flags = torch.tensor(r.json()["flags"])
    assert torch.equal(flags, vector.guard.flag(batch))
    assert r.json()["flagged"] == flags.any(1).tolist()


def test_transform_json_equals_the_guard(client, vector: Fitted) -> None:
    batch = rows(vector.splits.test, 5, 25)
    r = client.post("/v1/transform", json=json_body(batch))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    fixed = vector.guard.transform(batch)
    got = r.json()["modalities"]
    assert list(got) == list(batch.names)
    for n in batch.names:
        assert torch.equal(torch.tensor(got[n], dtype=torch.float32), fixed.modalities[n]), n


def test_drift_endpoint_equals_drift_test(client, vector: Fitted) -> None:
    window = vector.guard.drift_detector.window
    clean = rows(vector.splits.test, 0, window + 10)
    shifted = clean.with_modalities({"v2": clean.modalities["v2"] + 15.0})
    for batch in (clean, shifted):
        r = client.post("/v1/drift", json=json_body(batch))
        assert r.status_code == 200, r.text
        body = r.json()
        expected = vector.guard.drift_test(batch)
        assert body["drifted"] == expected.drifted and body["flagged"] == expected.to_dict()["flagged"]
        assert body["ratio"] == expected.to_dict()["ratio"]
        assert body["window"] == window and body["samples"] == window + 10
    assert body["drifted"] and body["flagged"] == ["v2"]  # the shifted window


def test_predict_equals_the_guard(emma: Fitted) -> None:
    batch = rows(emma.splits.test, 0, 30)
    with serving(emma.directory) as c:
        r = c.post("/v1/predict", json=json_body(batch))
        assert r.status_code == 200, r.text
        assert torch.equal(torch.tensor(r.json()["predictions"]), emma.guard.predict(batch))
        r = c.post("/v1/score", json=json_body(batch))
        assert torch.equal(torch.tensor(r.json()["scores"], dtype=torch.float32), emma.guard.score(batch))
        assert_error(c.post("/v1/transform", json=json_body(batch)), 404, "emma", "correct", "capability")


def test_missing_capability_is_a_404_naming_it(client, vector: Fitted) -> None:
    assert_error(client.post("/v1/predict", json=json_body(rows(vector.splits.test, 0, 3))), 404,
                 "predict", "capability", "flag, correct")


def test_npz_round_trip_for_images(image: Fitted) -> None:
    batch = rows(image.splits.test, 0, 12)
    arrays = {n: batch.modalities[n].numpy() for n in batch.names}
    with serving(image.directory) as c:
        r = c.post("/v1/transform", content=npz_bytes(arrays), headers={"content-type": NPZ})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == NPZ
        got = npz_arrays(r.content)
        fixed = image.guard.transform(batch)
        assert sorted(got) == sorted(batch.names)
        for n in batch.names:
            assert got[n].dtype == np.float32 and got[n].shape == tuple(batch.modalities[n].shape)
            assert np.array_equal(got[n], fixed.modalities[n].numpy()), n
        r = c.post("/v1/score", content=npz_bytes(arrays), headers={"content-type": NPZ})
        assert torch.equal(torch.tensor(r.json()["scores"], dtype=torch.float32), image.guard.score(batch))
        # float64 and integer arrays are accepted and computed in float32, like the guard does
        as64 = {n: a.astype(np.float64) for n, a in arrays.items()}
        r = c.post("/v1/score", content=npz_bytes(as64), headers={"content-type": NPZ})
        assert torch.equal(torch.tensor(r.json()["scores"], dtype=torch.float32),
                           image.guard.score(MultimodalBatch.from_arrays(as64, kinds={"camera": "image"})))


def test_metrics_are_exposed_and_count(vector: Fitted) -> None:
    batch = rows(vector.splits.test, 0, 40)
    with serving(vector.directory) as c:
        flags = vector.guard.flag(batch)
        for _ in range(2):
            assert c.post("/v1/flag", json=json_body(batch)).status_code == 200
        assert c.post("/v1/flag", json={"modalities": {}}).status_code == 422
        text = c.get("/metrics").text
        assert c.get("/metrics").headers["content-type"].startswith("text/plain")

    def value(line: str) -> float:
        hits = [row for row in text.splitlines() if row.startswith(line + " ")]
        assert len(hits) == 1, (line, [r for r in text.splitlines() if r.startswith(line.split("{")[0])])
        return float(hits[0].rsplit(" ", 1)[1])

    assert value('mmguard_requests_total{endpoint="/v1/flag",method="POST",status="200"}') == 2
    assert value('mmguard_requests_total{endpoint="/v1/flag",method="POST",status="422"}') == 1
    assert value('mmguard_errors_total{endpoint="/v1/flag",status="422"}') == 1
    assert value('mmguard_request_duration_seconds_count{endpoint="/v1/flag"}') == 3
    assert value("mmguard_scored_samples_total") == 80
    for i, n in enumerate(vector.guard.names):
        assert value(f'mmguard_flagged_samples_total{{modality="{n}"}}') == 2 * int(flags[:, i].sum())
        assert value(f'mmguard_flagged_fraction{{modality="{n}"}}') == pytest.approx(float(flags[:, i].float().mean()))
    assert value('mmguard_batch_size_samples_count{op="score"}') == 2
    assert value('mmguard_batch_size_samples_sum{op="score"}') == 80
    assert value('mmguard_batch_requests_sum{op="score"}') == 2
    assert value("mmguard_queue_depth") == 0
    assert 'mmguard_guard_info{kind="mmae"' in text
