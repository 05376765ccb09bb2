"""The service's OpenAPI 3.1 description, written for the loaded guard.

The routes read raw bodies (the body limit is enforced while reading, NPZ needs a binary body), so
FastAPI alone would describe no request body and an empty ``{}`` answer. :func:`describe` completes
the generated schema: each POST endpoint's request body (the JSON format with this guard's modalities
and per-sample shapes, or an NPZ archive), every answer with its status codes (the one-line error
object for 4xx and 503), and the bearer scheme when a token is set.

The schema is **not served** (no ``/openapi.json``, no docs pages: docs/serve.md, Security); it is
``create_app(...).openapi()`` in Python, for client generators and for the API fuzz
(``tests/serve/test_fuzz.py``, schemathesis).
"""

from __future__ import annotations

from typing import Any

from mmguard.data.model import ModalitySpec

FLOAT32_MAX = 3.4028234663852886e38
REF = "#/components/schemas/"

#: status -> when (the error table of docs/serve.md)
ERRORS = {
    400: "malformed JSON or NPZ, an empty body, a body cut off by the client",
    401: "missing or wrong bearer token",
    404: "the guard lacks the capability (the message names it)",
    409: "drift test on a guard fitted without drift detection",
    413: "body over --max-body-mb, more than --max-batch samples, an NPZ that expands beyond the limit",
    415: "a Content-Type other than application/json or application/x-npz",
    422: "well-formed but wrong for this guard (modalities, shapes, sample counts, NaN/Inf, empty batch, fields)",
    503: "the queue is full or the service is starting or shutting down (Retry-After: 1)",
}
POST_ERRORS = (400, 401, 404, 413, 415, 422, 503)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def samples_schema(spec: ModalitySpec, max_samples: int, min_samples: int = 1) -> dict[str, Any]:
    """A list of min_samples..max_samples samples, each nested lists of the modality's per-sample shape."""
    item: dict[str, Any] = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    for dim in reversed(spec.shape):
        item = {"type": "array", "items": item, "minItems": dim, "maxItems": dim}
    return {"type": "array", "items": item, "minItems": min_samples, "maxItems": max_samples,
            "description": f"{spec.kind.value} modality, per-sample shape {list(spec.shape)}; raw units; every "
                           "modality holds the same number of samples"}


def batch_schema(specs: tuple[ModalitySpec, ...], max_samples: int, min_samples: int = 1) -> dict[str, Any]:
    names = [s.name for s in specs]
    return {"type": "object", "required": ["modalities"], "additionalProperties": False, "properties": {
        "modalities": {"type": "object", "required": names, "additionalProperties": False,
                       "properties": {s.name: samples_schema(s, max_samples, min_samples) for s in specs}}}}


def _number_rows(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "array", "items": items}}


def components(specs: tuple[ModalitySpec, ...], max_batch: int, max_drift: int, window: int | None
               ) -> dict[str, Any]:
    names = {"type": "array", "items": {"type": "string"}}
    return {
        "Error": {"type": "object", "required": ["error", "status"], "additionalProperties": False,
                  "properties": {"error": {"type": "string", "description": "one line, never a stack trace"},
                                 "status": {"type": "integer", "minimum": 400, "maximum": 599}}},
        "Batch": batch_schema(specs, max_batch),
        "DriftWindow": batch_schema(specs, max_drift, window or 1),  # a test needs a whole window
        "Scores": {"type": "object", "required": ["modalities", "threshold", "scores"], "properties": {
            "modalities": names, "threshold": {"type": "number"},
            "scores": _number_rows({"type": "number"})}},
        "Flags": {"type": "object", "required": ["modalities", "flags", "flagged"], "properties": {
            "modalities": names, "flags": _number_rows({"type": "boolean"}),
            "flagged": {"type": "array", "items": {"type": "boolean"}}}},
        "Predictions": {"type": "object", "required": ["predictions"], "properties": {
            "predictions": {"type": "array", "items": {"type": "number"}}}},
        "Drift": {"type": "object", "required": ["drifted", "ratio", "flagged", "window", "samples"], "properties": {
            "drifted": {"type": "boolean"}, "ratio": {"type": "object", "additionalProperties": {"type": "number"}},
            "flagged": names, "window": {"type": ["integer", "null"]}, "samples": {"type": "integer"}}},
        "Info": {"type": "object", "required": ["kind", "capabilities", "modalities", "backend", "limits"],
                 "properties": {"kind": {"type": "string"}, "capabilities": {"type": "object"},
                                "modalities": {"type": "array", "items": {"type": "object"}},
                                "backend": {"type": "string", "enum": ["torch", "onnx"]},
                                "precision": {"type": "string", "enum": ["fp32", "bf16"]},
                                "limits": {"type": "object"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": ERRORS[c], "content": _json(_ref("Error"))} for c in codes}


def _body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {
        **_json(_ref(schema_name)),
        "application/x-npz": {"schema": {"type": "string", "format": "binary",
                                         "description": "numpy.savez archive: one (N, *shape) array per "
                                                        "modality, named after it"}}}}


def describe(schema: dict[str, Any], specs: tuple[ModalitySpec, ...], *, max_batch: int, max_drift: int,
             window: int | None, secured: bool) -> dict[str, Any]:
    """Complete FastAPI's generated ``schema`` in place (see the module docstring) and return it.

    ``window``: the drift detector's window (the least samples ``/v1/drift`` takes), ``None`` without one."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(
        components(specs, max_batch, max_drift, window))
    if secured:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
    get_ok = {
        "/health": ({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, ()),
        "/ready": ({"type": "object", "required": ["ready", "kind"], "properties": {
            "ready": {"const": True}, "kind": {"type": "string"}}}, (401, 503)),
        "/v1/info": (_ref("Info"), (401,)),
    }
    posts = {"/v1/score": ("Batch", "Scores", ()), "/v1/flag": ("Batch", "Flags", ()),
             "/v1/transform": ("Batch", "Batch", ()), "/v1/predict": ("Batch", "Predictions", ()),
             "/v1/drift": ("DriftWindow", "Drift", (409,))}
    paths = schema.get("paths", {})
    for path, (ok, codes) in get_ok.items():
        op = paths[path]["get"]
        op["responses"] = {"200": {"description": "OK", "content": _json(ok)}, **_errors(*codes)}
        if path == "/health":
            op["security"] = []
    for path, (request, answer, extra) in posts.items():
        op = paths[path]["post"]
        op["requestBody"] = _body(request)
        ok: dict[str, Any] = _json(_ref(answer))
        if path == "/v1/transform":
            ok["application/x-npz"] = {"schema": {"type": "string", "format": "binary",
                                                  "description": "answer to an NPZ request"}}
        op["responses"] = {"200": {"description": "OK", "content": ok},
                           **_errors(*sorted({*POST_ERRORS, *extra}))}
    paths["/metrics"]["get"]["responses"] = {
        "200": {"description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}
    return schema
