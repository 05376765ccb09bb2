"""Request and response bodies: JSON and NPZ in, a checked :class:`MultimodalBatch` out.

Two request formats (docs/serve.md):

* ``application/json`` — ``{"modalities": {"name": [[...sample 0...], [...sample 1...]], ...}}``;
* ``application/x-npz`` — a NumPy ``.npz`` archive with one array ``(N, *shape)`` per modality
  (``np.savez(f, camera=..., kin=...)``), read with ``allow_pickle=False``.

Everything that can be wrong with a body is a :class:`~mmguard.serve.problems.RequestError`
with one line naming the problem: 400 for bodies that cannot be parsed, 415 for other media
types, 413 for too many samples or an NPZ that expands beyond what the limits allow, 422 for
well-formed bodies that do not fit the guard (unknown or missing modality, wrong per-sample
shape, NaN/Inf, an empty batch, non-numeric values).

NPZ archives are checked before any array is read: only ``.npy`` members, no duplicates, the
uncompressed sizes declared by the archive within a bound derived from the guard's modalities
and ``max_batch`` (so a zip bomb is refused unread); then each member's header is checked before
its data are read: numeric dtypes only, and the data it declares no larger than the member.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.serve.problems import RequestError

JSON = "application/json"
NPZ = "application/x-npz"
NUMERIC_KINDS = "iuf"
NPY_HEADER_SLACK = 64 * 1024  # bytes of .npy header and zip overhead allowed per member


def media_type(content_type: str | None) -> str:
    """``json`` or ``npz`` from a Content-Type header (parameters such as charset ignored); else 415."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base == JSON:
        return "json"
    if base == NPZ:
        return "npz"
    shown = base or "none"
    raise RequestError(415, f"unsupported Content-Type {shown!r}; send {JSON} or {NPZ}")


# ====================================================================== JSON
def decode_json(body: bytes | str) -> dict[str, np.ndarray]:
    """The modalities of a JSON request body (see the module docstring)."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    return modalities_from_json(obj)


def modalities_from_json(obj: Any) -> dict[str, np.ndarray]:
    """Arrays from a parsed ``{"modalities": {...}}`` object (422 for anything else)."""
    if not isinstance(obj, dict):
        raise RequestError(422, f'the body must be a JSON object {{"modalities": {{...}}}}, got {_kind(obj)}')
    extra = [k for k in obj if k != "modalities"]
    if extra:
        raise RequestError(422, f'unknown field {extra[0]!r}; a request holds only "modalities"')
    if "modalities" not in obj:
        raise RequestError(422, 'missing field "modalities"')
    mods = obj["modalities"]
    if not isinstance(mods, dict):
        raise RequestError(422, f'"modalities" must be an object {{name: samples}}, got {_kind(mods)}')
    return {name: _json_array(name, value) for name, value in mods.items()}


def _json_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, list):
        raise RequestError(422, f"modality {name!r}: expected a list of samples, got {_kind(value)}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(422, f"modality {name!r}: samples are not a rectangular array of numbers "
                                "(ragged lists?)") from None
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise RequestError(422, f"modality {name!r}: values must be numbers (got {_dtype_words(arr.dtype)})")
    return arr


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _dtype_words(dtype: np.dtype) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or non-numeric values",
            "c": "complex numbers"}.get(dtype.kind, f"dtype {dtype}")


# ====================================================================== NPZ
def npz_limit(specs: Sequence[ModalitySpec], max_samples: int) -> int:
    """Largest uncompressed NPZ accepted: ``max_samples`` float64 samples of every modality, plus slack."""
    return max_samples * sum(s.size for s in specs) * 8 + NPY_HEADER_SLACK * (len(specs) + 1)


def decode_npz(body: bytes, max_uncompressed: int) -> dict[str, np.ndarray]:
    """The modalities of an NPZ body (one ``(N, *shape)`` array per modality; see the module docstring).

    One pass over the archive: each member's ``.npy`` header is read and checked, then its data are
    read straight into the array it declares (what ``np.load`` does, without opening the archive and
    parsing every header a second time)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise RequestError(400, f"malformed NPZ: not a zip archive ({_line(exc)})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if not infos:
            raise RequestError(422, "empty NPZ: it holds no arrays")
        if len(set(names)) != len(names):
            raise RequestError(400, "malformed NPZ: duplicate member names")
        bad = [n for n in names if not n.endswith(".npy") or "/" in n or "\\" in n or n == ".npy"]
        if bad:
            raise RequestError(400, f"malformed NPZ: member {bad[0][:80]!r} is not an array "
                                    "(write it with numpy.savez)")
        total = sum(i.file_size for i in infos)
        if total > max_uncompressed:
            raise RequestError(413, f"NPZ expands to {total / 2**20:.1f} MB; this guard and --max-batch allow "
                                    f"at most {max_uncompressed / 2**20:.1f} MB")
        return {info.filename[:-4]: _read_member(zf, info) for info in infos}


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """The array of one ``.npy`` member, after refusing a header that declares a non-numeric dtype or
    more data than the member holds."""
    name = info.filename[:-4]
    fmt = np.lib.format
    try:
        with zf.open(info) as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in NUMERIC_KINDS:
                raise RequestError(422, f"modality {name!r}: values must be numbers (got {_dtype_words(dtype)})")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise RequestError(400, f"malformed NPZ: array {name[:80]!r} declares {nbytes} bytes but holds "
                                        f"{info.file_size}")
            arr = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
            view = memoryview(arr.reshape(-1, order="A")).cast("B")  # the array's own memory
            got = fh.readinto(view) if nbytes else 0
    except (RequestError, MemoryError):
        raise
    except Exception as exc:  # untrusted bytes: any failure to decode them is the client's
        raise RequestError(400, f"malformed NPZ: array {name[:80]!r}: {_line(exc)}") from None
    if got != nbytes:
        raise RequestError(400, f"malformed NPZ: array {name[:80]!r} declares {nbytes} bytes, the archive holds "
                                f"{got}")
    return arr


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed NPZ of ``arrays`` (the transform response for NPZ requests)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


# ====================================================================== checks
def to_batch(arrays: Mapping[str, np.ndarray], specs: Sequence[ModalitySpec], max_samples: int) -> MultimodalBatch:
    """A float32 batch in the guard's modality order, after every check of the module docstring."""
    names = [s.name for s in specs]
    unknown = [n for n in arrays if n not in names]
    if unknown:
        raise RequestError(422, f"unknown modality {unknown[0]!r}; the guard has {names}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise RequestError(422, f"missing modality {missing[0]!r}; the guard needs {names}")
    count: int | None = None
    for s in specs:
        a = arrays[s.name]
        if a.ndim >= 1 and a.shape[0] == 0:
            raise RequestError(422, f"empty batch: modality {s.name!r} has no samples")
        if a.ndim != 1 + len(s.shape):
            per = ", ".join(str(d) for d in s.shape)
            raise RequestError(422, f"modality {s.name!r}: expected a list of samples of shape {s.shape}, i.e. "
                                    f"an array (N, {per}), got shape {tuple(a.shape)}")
        if tuple(a.shape[1:]) != s.shape:
            raise RequestError(422, f"modality {s.name!r}: expected per-sample shape {s.shape}, "
                                    f"got {tuple(a.shape[1:])}")
        if count is None:
            count = int(a.shape[0])
        elif a.shape[0] != count:
            raise RequestError(422, f"modality {s.name!r} has {a.shape[0]} samples, {names[0]!r} has {count}")
    assert count is not None  # specs are never empty
    if count > max_samples:
        raise RequestError(413, f"{count} samples in one request; this server takes at most {max_samples} "
                                "(--max-batch): split the batch")
    tensors = {s.name: torch.from_numpy(_finite_float32(s.name, arrays[s.name])) for s in specs}
    return MultimodalBatch(modalities=tensors, specs=tuple(specs))


def _finite_float32(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f" and not bool(np.isfinite(a).all()):
        raise RequestError(422, f"modality {name!r} contains NaN/Inf (first at sample {_first_bad(a)})")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if not bool(np.isfinite(out).all()):
        raise RequestError(422, f"modality {name!r}: a value beyond the float32 range (first at sample "
                                f"{_first_bad(out)})")
    return out


def _first_bad(a: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(1))[0])


# ====================================================================== responses
def batch_arrays(batch: MultimodalBatch) -> dict[str, np.ndarray]:
    return {n: batch.modalities[n].detach().cpu().numpy() for n in batch.names}


def batch_json(batch: MultimodalBatch) -> dict[str, Any]:
    """``{"modalities": {name: nested lists}}`` — the request format, for transform responses."""
    return {"modalities": {n: batch.modalities[n].detach().cpu().tolist() for n in batch.names}}
