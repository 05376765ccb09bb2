"""API fuzz with schemathesis: every operation of the app's OpenAPI schema, in-process (ASGI, no network).

The schema is ``app.openapi()`` (the service does not serve it; :mod:`mmguard.serve.openapi` writes the
request bodies for the loaded guard's modalities and every documented answer). schemathesis generates
requests from it — valid bodies (positive mode) and bodies that break the schema (negative mode), JSON
and NPZ — sends them through the app with its lifespan running (the micro-batcher and the inference
thread are the real ones), and checks every answer:

* ``not_a_server_error`` — never a 5xx;
* ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
  ``response_headers_conformance`` — each answer is one the schema documents, in the documented form
  (errors are the one-line ``{"error", "status"}`` object);
* ``negative_data_rejection`` — a request that breaks the schema gets a 4xx;
* ``ignored_auth`` — an operation that needs the bearer token refuses a request without it.

Not checked: ``positive_data_acceptance``, because a body valid for the schema can still be refused
with a documented 4xx the schema cannot express (modalities with different sample counts, a drift
window shorter than the detector's, an operation the guard cannot do).

NPZ bodies come from a strategy of real archives (right and wrong names, shapes, dtypes, NaN/Inf,
compressed or not, sometimes cut short). The CI run is bounded (``MAX_EXAMPLES`` per operation and mode,
~10 s on 2 cores); ``test_api_fuzz_long`` (``-m slow``) runs ``LONG_EXAMPLES`` (~3 min).

schemathesis's own pytest integration (``schemathesis.pytest.from_fixture``) fails under pytest 9
(``'Function' object has no attribute '_nodeid'``), so each test drives ``operation.as_strategy()``
with hypothesis itself. schemathesis's pytest plugin still ends the app's lifespan after every test;
the next test starts it again (the micro-batcher then starts a new inference thread).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_testutil import NPZ, TOKEN, Fitted, npz_bytes
from serve_testutil import settings as serve_settings

from mmguard.serve.app import create_app

MAX_EXAMPLES = 25  # per operation and generation mode
LONG_EXAMPLES = 500
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDTHS = {"v0": 4, "v1": 5, "v2": 3}  # the vector modalities of both fuzzed guards (tests/serve/conftest.py)


# ============================================================================ NPZ bodies
@st.composite
def npz_body(draw: st.DrawFn) -> bytes:
    """A numpy archive: mostly the guard's modalities (v0: 4, v1: 5, v2: 3 values), often a little wrong."""
    names = draw(st.lists(st.sampled_from(["v0", "v1", "v2", "x", "v0/.."]), min_size=0, max_size=4, unique=True)
                 | st.just(["v0", "v1", "v2"]))
    n = draw(st.integers(0, 4))
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        width = WIDTHS.get(name, 2)
        shape = draw(st.sampled_from([(n, width), (n, width), (n,), (n, width, 2), (max(n - 1, 0), width)]))
        dtype = draw(st.sampled_from(["<f4", "<f8", "<i8", ">f4", "|b1", "<c8", "|u1"]))
        value = draw(st.sampled_from([0.0, 1.0, 75.0, -1e6, np.nan, np.inf, 1e39]))
        with np.errstate(all="ignore"):
            arrays[name.replace("/", "_")] = np.full(shape, value).astype(dtype)
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
    data = buf.getvalue()
    cut = draw(st.sampled_from([None, None, None, 0.5, 0.9]))
    return data if cut is None else data[: int(len(data) * cut)]


@st.composite
def valid_npz(draw: st.DrawFn) -> bytes:
    """An archive the guards take: every modality, the same number of samples, finite numbers (some huge)."""
    n = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(["<f4", "<f8", "<i4"]))
    scale = draw(st.sampled_from([1.0, 1.0, 1e6, 1e19]))
    with np.errstate(all="ignore"):  # 1e19 as int32 is some integer: still a valid request
        arrays = {name: (draw(st.floats(0, 200)) + scale * np.arange(n * width).reshape(n, width)).astype(dtype)
                  for name, width in WIDTHS.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_or_junk() -> st.SearchStrategy[bytes]:
    junk = st.binary(max_size=200) | st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=200))
    odd_zip = st.builds(_zip_with, st.sampled_from(["notes.txt", "v0.npy", "../v0.npy"]), st.binary(max_size=64))
    return valid_npz() | npz_body() | junk | odd_zip


def _zip_with(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


schemathesis.openapi.media_type(NPZ, npz_or_junk())


# ============================================================================ the schema
OPERATIONS = [("GET", "/health"), ("GET", "/ready"), ("GET", "/v1/info"), ("GET", "/metrics"),
              *[("POST", p) for p in ("/v1/score", "/v1/flag", "/v1/transform", "/v1/predict", "/v1/drift")]]
CASES = [pytest.param(m, p, mode, id=f"{m} {p} {mode.value}") for m, p in OPERATIONS
         for mode in ([GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if m == "POST" else [GenerationMode.POSITIVE])]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection, ignored_auth]


@pytest.fixture(scope="module", params=["vector", "emma"])
def api_schema(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The app's schema, bound to the app: schemathesis runs its lifespan (batcher, inference thread).

    Two guards: ``mmae`` (flags, corrects, drift window 100) and ``emma`` (flags, predicts)."""
    fitted: Fitted = request.getfixturevalue(request.param)
    assert {s.name: s.shape for s in fitted.guard.specs} == {n: (w,) for n, w in WIDTHS.items()}
    app = create_app(fitted.directory, serve_settings(token=TOKEN, max_batch=64))
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()  # drain the batcher, stop the inference thread


def fuzz(api_schema: Any, method: str, path: str, mode: GenerationMode, examples: int) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    run()


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_fuzz(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    fuzz(api_schema, method, path, mode, MAX_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_fuzz_long(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    fuzz(api_schema, method, path, mode, LONG_EXAMPLES)


def test_the_schema_describes_this_guard(vector: Fitted) -> None:
    """The request body names the guard's modalities with their per-sample shapes; errors are documented."""
    app = create_app(vector.directory, serve_settings(token=TOKEN))
    doc = app.openapi()
    mods = doc["components"]["schemas"]["Batch"]["properties"]["modalities"]
    assert mods["required"] == list(vector.guard.names)
    for spec in vector.guard.specs:
        sample = mods["properties"][spec.name]["items"]
        assert (sample["minItems"], sample["maxItems"]) == (spec.shape[0], spec.shape[0])
    score = doc["paths"]["/v1/score"]["post"]
    assert set(score["requestBody"]["content"]) == {"application/json", NPZ}
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(score["responses"])
    assert doc["security"] == [{"bearer": []}] and doc["paths"]["/health"]["get"]["security"] == []
    assert "security" not in create_app(vector.directory, serve_settings()).openapi()


# ============================================================================ what the fuzz found
def test_finite_input_far_outside_the_fitted_range(vector: Fitted) -> None:
    """Found by the fuzz: a finite float32 value like 2e19 overflows the guard's float32 arithmetic, so
    ``guard.score`` is inf and the JSON answer failed (500). Now the score is float32's largest number
    (flagged) and the stream's reply valid JSON; a correction that is not finite is a 422 naming the
    modality and sample (mmae's stays finite here, so a guard returning inf stands in for one that does not)."""
    import json

    import torch
    from serve_testutil import assert_error, json_body, rows, service_of, serving

    batch = rows(vector.splits.test, 0, 3)
    huge = batch.with_modalities({"v1": batch.modalities["v1"].clone().index_fill_(0, torch.tensor([1]), 2e19)})
    assert not bool(torch.isfinite(vector.guard.score(huge)).all())  # the in-process guard overflows
    body = json_body(huge)
    with serving(vector.directory) as c:
        scores = c.post("/v1/score", json=body).json()["scores"]
        assert scores[1][1] == float(np.finfo(np.float32).max) and all(np.isfinite(scores[0] + scores[2]))
        assert c.post("/v1/flag", json=body).json()["flags"][1][1] is True
        assert c.post("/v1/transform", json=body).status_code == 200
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_text(json.dumps(body))
            reply = json.loads(ws.receive_text(), parse_constant=lambda c: pytest.fail(f"{c} in the reply"))
            assert reply["flags"][1][1] is True

        def overflowing(b):
            x = b.modalities["v1"].clone()
            x[-1, 0] = float("inf")
            return b.with_modalities({"v1": x})

        service_of(c).batcher.ops["transform"] = overflowing
        assert_error(c.post("/v1/transform", json=body), 422, "modality 'v1'", "not finite", "sample 2")
        assert_error(c.post("/v1/transform", content=npz_bytes(body["modalities"]), headers={"content-type": NPZ}),
                     422, "modality 'v1'")
