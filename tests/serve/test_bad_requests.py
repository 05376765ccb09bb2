"""Every bad request gets one 4xx with a one-line JSON message naming the problem — never a 500.

The corpus below covers malformed JSON and NPZ, unknown and missing modalities, wrong per-sample
shapes, NaN/Inf, empty batches, too many samples, oversized bodies, wrong media types, zip bombs
and lying NPZ headers; a property-based part (hypothesis) throws arbitrary JSON values and bytes
at every endpoint and requires a status below 500 with the error format.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_testutil import NPZ, Fitted, assert_error, json_body, npz_bytes, rows, serving

ENDPOINTS = ["/v1/score", "/v1/flag", "/v1/transform", "/v1/drift", "/v1/predict"]
JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(vector: Fitted):
    with serving(vector.directory) as c:
        yield c


@pytest.fixture(scope="module")
def good(vector: Fitted) -> dict:
    return json_body(rows(vector.splits.test, 0, 4))


def with_mods(good: dict, **changes) -> dict:
    mods = dict(good["modalities"])
    for k, v in changes.items():
        if v is ...:
            mods.pop(k)
        else:
            mods[k] = v
    return {"modalities": mods}


def text_with(good: dict, name: str, token: str) -> str:
    """The good body as text with the first value of modality ``name`` replaced by ``token`` (NaN...)."""
    mods = {k: list(map(list, v)) for k, v in good["modalities"].items()}
    mods[name][0][0] = "@@"
    return json.dumps({"modalities": mods}).replace('"@@"', token)


def lying_npz() -> bytes:
    """A .npy member whose header declares 8 MB of float64 but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (250_000, 4)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("v0.npy", header.getvalue() + b"\x00" * 16)
    return buf.getvalue()


def zip_bomb() -> bytes:
    """100 MB of zeros compressed to ~100 kB."""
    buf = io.BytesIO()
    np.savez_compressed(buf, v0=np.zeros((12_500_000, 1)))
    return buf.getvalue()


def not_npy_member() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    return buf.getvalue()


# (id, build(good) -> (content, content-type), status, words in the message)
JSON_CASES = [
    ("unknown-modality", lambda g: with_mods(g, zz=[[1.0]]), 422, ["unknown modality", "zz"]),
    ("missing-modality", lambda g: with_mods(g, v1=...), 422, ["missing modality", "v1"]),
    ("no-modalities", lambda g: {"modalities": {}}, 422, ["missing modality"]),
    ("per-sample-shape", lambda g: with_mods(g, v0=[[1.0] * 5] * 4), 422, ["v0", "per-sample shape", "(4,)"]),
    ("one-sample-no-batch-axis", lambda g: with_mods(g, v0=[1.0, 2.0, 3.0, 4.0]), 422, ["v0", "list of samples"]),
    ("sample-counts-differ", lambda g: with_mods(g, v2=g["modalities"]["v2"][:3]), 422, ["v2", "samples"]),
    ("ragged", lambda g: with_mods(g, v0=[[1.0] * 4, [1.0] * 3]), 422, ["v0", "ragged"]),
    ("strings", lambda g: with_mods(g, v0=[["a"] * 4] * 4), 422, ["v0", "numbers", "strings"]),
    ("booleans", lambda g: with_mods(g, v0=[[True] * 4] * 4), 422, ["v0", "numbers", "booleans"]),
    ("nulls", lambda g: with_mods(g, v0=[[None] * 4] * 4), 422, ["v0", "numbers"]),
    ("huge-integer", lambda g: with_mods(g, v0=[[10**400] * 4] * 4), 422, ["v0", "numbers"]),
    ("modality-not-a-list", lambda g: with_mods(g, v0=3.0), 422, ["v0", "list of samples"]),
    ("empty-batch", lambda g: {"modalities": {n: [] for n in g["modalities"]}}, 422, ["empty batch"]),
    ("too-many-samples", lambda g: {"modalities": {n: v * 75 for n, v in g["modalities"].items()}}, 413,
     ["300 samples", "--max-batch", "256"]),
    ("not-an-object", lambda g: [1, 2, 3], 422, ["object"]),
    ("unknown-field", lambda g: {**g, "target": [1]}, 422, ["unknown field", "target"]),
    ("no-modalities-field", lambda g: {"samples": []}, 422, ["unknown field"]),
    ("modalities-not-an-object", lambda g: {"modalities": [1]}, 422, ["modalities", "object"]),
]

RAW_CASES = [
    ("nan", lambda g: (text_with(g, "v1", "NaN"), "application/json"), 422, ["v1", "NaN/Inf", "sample 0"]),
    ("inf", lambda g: (text_with(g, "v2", "-Infinity"), "application/json"), 422, ["v2", "NaN/Inf"]),
    ("beyond-float32", lambda g: (text_with(g, "v0", "1e39"), "application/json"), 422, ["v0", "float32"]),
    ("malformed-json", lambda g: ('{"modalities": {"v0": [[1, 2', "application/json"), 400, ["malformed JSON"]),
    ("not-utf8", lambda g: (b'{"modalities": "\xff\xfe\xfa"}', "application/json"), 400, ["malformed JSON"]),
    ("nested-too-deeply", lambda g: ("[" * 100_000 + "]" * 100_000, "application/json"), 400, ["nested"]),
    ("empty-body", lambda g: (b"", "application/json"), 400, ["empty"]),
    ("text-plain", lambda g: (json.dumps(g), "text/plain"), 415, ["Content-Type", "text/plain", "x-npz"]),
    ("form", lambda g: ("a=1", "application/x-www-form-urlencoded"), 415, ["Content-Type"]),
    ("no-content-type", lambda g: (json.dumps(g), None), 415, ["Content-Type", "none"]),
    ("npz-garbage", lambda g: (b"PK\x03\x04garbage", NPZ), 400, ["malformed NPZ"]),
    ("npz-not-a-zip", lambda g: (b"\x93NUMPY not a zip", NPZ), 400, ["malformed NPZ", "zip"]),
    ("npz-json-body", lambda g: (json.dumps(g), NPZ), 400, ["malformed NPZ"]),
    ("npz-non-array-member", lambda g: (not_npy_member(), NPZ), 400, ["notes.txt", "numpy.savez"]),
    ("npz-no-arrays", lambda g: (npz_bytes({}), NPZ), 422, ["empty NPZ"]),
    ("npz-object-array", lambda g: (npz_bytes({"v0": np.array([[{"a": 1}]] * 4, dtype=object)}), NPZ), 422,
     ["v0", "numbers"]),
    ("npz-complex", lambda g: (npz_bytes({"v0": np.ones((4, 4), dtype=complex)}), NPZ), 422, ["v0", "complex"]),
    ("npz-bool", lambda g: (npz_bytes({"v0": np.ones((4, 4), dtype=bool)}), NPZ), 422, ["v0", "booleans"]),
    ("npz-unknown-modality", lambda g: (npz_bytes({"cam": np.ones((4, 4))}), NPZ), 422, ["unknown modality", "cam"]),
    ("npz-missing-modality", lambda g: (npz_bytes({"v0": np.ones((4, 4))}), NPZ), 422, ["missing modality", "v1"]),
    ("npz-shape", lambda g: (npz_bytes({"v0": np.ones((4, 2, 2)), "v1": np.ones((4, 5)), "v2": np.ones((4, 3))}),
                             NPZ), 422, ["v0", "(4,)"]),
    ("npz-nan", lambda g: (npz_bytes({"v0": np.full((4, 4), np.nan), "v1": np.ones((4, 5)),
                                      "v2": np.ones((4, 3))}), NPZ), 422, ["v0", "NaN/Inf"]),
    ("npz-bomb", lambda g: (zip_bomb(), NPZ), 413, ["NPZ expands", "MB"]),
    ("npz-lying-header", lambda g: (lying_npz(), NPZ), 400, ["malformed NPZ", "declares"]),
]


def post(client, path: str, content, content_type: str | None):
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(("build", "status", "words"), [pytest.param(*c[1:], id=c[0]) for c in JSON_CASES])
def test_bad_json_request(client, good: dict, build, status: int, words: list[str]) -> None:
    for path in ("/v1/score", "/v1/transform"):
        assert_error(client.post(path, content=json.dumps(build(good)), headers=JSON_TYPE), status, *words)


@pytest.mark.parametrize(("build", "status", "words"), [pytest.param(*c[1:], id=c[0]) for c in RAW_CASES])
def test_bad_raw_request(client, good: dict, build, status: int, words: list[str]) -> None:
    content, ctype = build(good)
    for path in ("/v1/flag", "/v1/transform"):
        assert_error(post(client, path, content, ctype), status, *words)


def test_the_good_body_itself_is_accepted(client, good: dict) -> None:
    """The corpus edits a body that works (so each refusal is about the edit)."""
    for path in ("/v1/score", "/v1/flag", "/v1/transform"):
        assert client.post(path, json=good).status_code == 200


def test_oversized_body_is_413_whether_declared_or_streamed(vector: Fitted) -> None:
    batch = rows(vector.splits.test, 0, 100)
    body = json.dumps(json_body(batch)).encode()
    assert len(body) > 0.02 * 2**20
    with serving(vector.directory, max_body_mb=0.02) as c:
        assert_error(c.post("/v1/score", content=body, headers=JSON_TYPE), 413, "--max-body-mb", "0.02 MB")

        def chunks():  # no Content-Length: the limit applies while reading
            for i in range(0, len(body), 1000):
                yield body[i:i + 1000]

        assert_error(c.post("/v1/score", content=chunks(), headers=JSON_TYPE), 413, "--max-body-mb")
        small = json.dumps(json_body(rows(batch, 0, 5))).encode()
        assert c.post("/v1/score", content=small, headers=JSON_TYPE).status_code == 200


def test_drift_needs_a_full_window(client, vector: Fitted) -> None:
    window = vector.guard.drift_detector.window
    assert_error(client.post("/v1/drift", json=json_body(rows(vector.splits.test, 0, 10))), 422,
                 f"{window} samples", "got 10")


def test_drift_on_a_guard_without_detector_is_409(toy: Fitted) -> None:
    from serve_testutil import toy_registered

    with toy_registered(), serving(toy.directory) as c:
        assert_error(c.post("/v1/drift", json=json_body(rows(toy.splits.test, 0, 10))), 409, "without drift")


def test_unknown_path_and_wrong_method(client) -> None:
    assert_error(client.get("/v1/nothing"), 404, "no such endpoint", "/v1/nothing")
    assert_error(client.get("/v1/score"), 405, "method not allowed")
    assert_error(client.post("/health"), 405, "method not allowed")


# ============================================================================ property-based
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=40,
)
NUMBERS = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-10**6, 10**6)
SAMPLES = st.lists(st.lists(NUMBERS | st.booleans() | st.none(), max_size=6), max_size=5) | JSON_VALUES
NEAR_VALID = st.fixed_dictionaries({"modalities": st.dictionaries(
    st.sampled_from(["v0", "v1", "v2", "x", ""]), SAMPLES, max_size=4)})


def _check_no_500(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert_error(response, response.status_code)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES | NEAR_VALID, path=st.sampled_from(ENDPOINTS))
def test_fuzz_json_bodies_never_500(client, value, path: str) -> None:
    _check_no_500(client.post(path, content=json.dumps(value), headers=JSON_TYPE))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"PK\x03\x04", b"{", b"\x93NUMPY"]),
       ctype=st.sampled_from(["application/json", NPZ]), path=st.sampled_from(ENDPOINTS))
def test_fuzz_bytes_never_500(client, data: bytes, prefix: bytes, ctype: str, path: str) -> None:
    _check_no_500(client.post(path, content=prefix + data, headers={"content-type": ctype}))


def test_a_bug_is_a_bare_500_without_internals(vector: Fitted) -> None:
    """Even an unexpected exception inside the guard reaches the client as one generic line."""
    from serve_testutil import TestClient, service_of, settings

    from mmguard.serve.app import create_app

    def broken(batch):
        raise RuntimeError("secret internals at /srv/plant/guard")

    with TestClient(create_app(vector.directory, settings()), raise_server_exceptions=False) as c:
        service_of(c).batcher.ops["score"] = broken
        r = c.post("/v1/score", json=json_body(rows(vector.splits.test, 0, 3)))
        assert r.status_code == 500 and r.json() == {"error": "internal error (see the server log)", "status": 500}
        assert "secret" not in r.text and "Traceback" not in r.text
        assert c.post("/v1/transform", json=json_body(rows(vector.splits.test, 0, 3))).status_code == 200
