"""A fitted guard as one ONNX graph: ``export_onnx(guard, "model.onnx")`` (docs/export.md).

The graph is :meth:`mmguard.guard.Guard.export_module` — raw inputs, one per modality (float32,
named after it, batch axis dynamic) → standardisation (constants) → the guard's
``_inference_module`` → outputs:

* ``scores`` (N, M) float32, normalised with the calibration (1.0 = threshold), and ``flags``
  (N, M) bool = ``scores > 1`` — guards that flag;
* ``fixed:<modality>`` (N, *shape) float32 in raw units — guards that correct;
* ``prediction`` (N,) int64 — guards that predict.

Exporter (decision): ``torch.onnx.export(..., dynamo=True)`` — the ``torch.export``-based exporter,
the default of torch 2.13 (it needs ``onnxscript``); the TorchScript exporter is deprecated. The
batch axis is a ``torch.export.Dim`` (``dynamic_shapes``). Weights are stored inside the one
``.onnx`` file (no external data), and the file is written atomically after
``onnx.checker.check_model``.

Metadata (``metadata_props``, strings; JSON where structured): ``mmguard.kind``,
``mmguard.export_format``, ``mmguard.version``, ``mmguard.torch_version``, ``mmguard.capabilities``,
``mmguard.modalities`` (name, kind, shape), ``mmguard.outputs``, ``mmguard.false_alarm_rate``,
``mmguard.score_threshold`` and ``mmguard.adapted`` (whether the input statistics were adapted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mmguard.errors import MMGuardError, SpecError
from mmguard.guard import Guard
from mmguard.io.atomic import atomic_write

FORMATS = ("onnx",)
EXPORT_FORMAT = 1
#: samples of the example batch the graph is traced with (not 1: a size-1 axis would be specialised)
TRACE_BATCH = 2


def require_export_extra() -> None:
    """One-line :class:`SpecError` when a package of the ``export`` extra is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise SpecError(f"ONNX export needs the export extra ({exc.name} is not installed): "
                        "pip install 'mmguard[export]'") from None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SpecError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return fmt


def metadata(guard: Guard, output_names: list[str]) -> dict[str, str]:
    """The ``mmguard.*`` metadata of an exported guard (every value a string)."""
    import mmguard

    return {
        "mmguard.kind": guard.name,
        "mmguard.export_format": str(EXPORT_FORMAT),
        "mmguard.version": mmguard.__version__,
        "mmguard.torch_version": torch.__version__.split("+")[0],
        "mmguard.capabilities": json.dumps(guard.capabilities()),
        "mmguard.modalities": json.dumps([s.to_dict() for s in guard.specs]),
        "mmguard.outputs": json.dumps(output_names),
        "mmguard.false_alarm_rate": json.dumps(guard.config.false_alarm_rate),
        "mmguard.score_threshold": "1.0",
        "mmguard.adapted": json.dumps(guard.adapted),
    }


def export_onnx(guard: Guard, path: str | Path) -> Path:
    """Write the guard's whole inference path to ``path`` as one ONNX model; returns the path."""
    require_export_extra()
    import onnx

    out = Path(path)
    if out.is_dir():
        raise SpecError(f"cannot write the ONNX model to {str(out)!r}: it is a directory (give a file path)")
    proto = to_model_proto(guard)

    def write(tmp: str) -> None:
        onnx.save_model(proto, tmp)

    atomic_write(out, write)
    return out


def to_model_proto(guard: Guard) -> Any:
    """The checked ``onnx.ModelProto`` of the guard's inference path, metadata attached."""
    require_export_extra()
    import onnx

    module = guard.export_module()  # NotFittedError / SpecError (no hook) come from here, one line each
    batch = torch.export.Dim("batch", min=1)
    args = tuple(torch.zeros(TRACE_BATCH, *s.shape) for s in guard.specs)
    try:
        with _quiet():
            program = torch.onnx.export(
                module, args, dynamo=True, verbose=False, input_names=list(guard.names),
                output_names=module.output_names, dynamic_shapes=(tuple({0: batch} for _ in guard.names),),
                external_data=False, optimize=True,
            )
    except MMGuardError:
        raise
    except Exception as exc:  # a hook that torch.export cannot trace: one line naming the guard
        raise SpecError(f"guard {guard.name!r}: ONNX export failed ({_first_line(exc)[:300]})") from None
    proto = program.model_proto  # type: ignore[union-attr]
    proto.doc_string = (f"mmguard {guard.name} guard: raw modalities -> standardisation -> the guard -> "
                        f"{', '.join(module.output_names)} (docs/export.md)")
    onnx.helper.set_model_props(proto, metadata(guard, module.output_names))
    onnx.checker.check_model(proto)
    return proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings and log lines (e.g. torchvision not installed) are not the user's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
