"""Running an exported guard with ONNX Runtime: :class:`OnnxGuard` (docs/export.md).

``OnnxGuard("model.onnx")`` has the torch guard's inference API on :class:`MultimodalBatch` in raw
units — ``score``, ``flag``, ``transform``, ``predict`` — with the same input checks and one-line
errors (modality names and order, per-sample shapes, NaN/Inf, an empty batch, a missing capability).
It runs on the CPU execution provider with ``threads`` intra-op threads (default 1) and in chunks of
:data:`~mmguard.guard.INFERENCE_CHUNK` samples (bounded memory). What the graph is — kind,
modalities, capabilities — comes from the file's ``mmguard.*`` metadata
(:func:`mmguard.export.onnx.metadata`); a file without it is refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.errors import CheckpointError, DataError, SpecError
from mmguard.export.onnx import EXPORT_FORMAT, export_onnx, require_export_extra
from mmguard.guard import INFERENCE_CHUNK, Guard, check_input_batch


class OnnxGuard:
    """An exported guard run by ONNX Runtime (see the module docstring)."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        require_export_extra()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model {str(self.path)!r} does not exist or is not a file")
        if not isinstance(threads, int) or threads < 1:
            raise SpecError(f"ONNX Runtime threads must be a positive integer, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types: invalid protobuf, graph, ...
            raise CheckpointError(f"{str(self.path)!r} is not a readable ONNX model ({_first_line(exc)[:200]})"
                                  ) from None
        self.threads = threads
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._read_metadata()

    @classmethod
    def from_guard(cls, guard: Guard, *, threads: int = 1) -> OnnxGuard:
        """Export ``guard`` to a temporary file and load it (the file is removed once loaded)."""
        with tempfile.TemporaryDirectory(prefix="mmguard-onnx-") as tmp:
            return cls(export_onnx(guard, Path(tmp) / f"{guard.name}.onnx"), threads=threads)

    def _read_metadata(self) -> None:
        meta, where = self.metadata, repr(str(self.path))
        if "mmguard.kind" not in meta:
            raise CheckpointError(f"{where} was not exported by mmguard (no mmguard metadata)")
        if meta.get("mmguard.export_format") != str(EXPORT_FORMAT):
            raise CheckpointError(f"{where}: export format {meta.get('mmguard.export_format')!r}, "
                                  f"this mmguard reads {EXPORT_FORMAT}")
        try:
            self.name: str = meta["mmguard.kind"]
            caps = json.loads(meta["mmguard.capabilities"])
            self.flags, self.corrects, self.predicts = bool(caps["flag"]), bool(caps["correct"]), bool(caps["predict"])
            self.specs: tuple[ModalitySpec, ...] = tuple(ModalitySpec.from_dict(d)
                                                         for d in json.loads(meta["mmguard.modalities"]))
            self.output_names: list[str] = list(json.loads(meta["mmguard.outputs"]))
            self.false_alarm_rate = float(json.loads(meta["mmguard.false_alarm_rate"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: malformed mmguard metadata ({_first_line(exc)})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != list(self.names) or outputs != self.output_names:
            raise CheckpointError(f"{where}: the graph's inputs {inputs} / outputs {outputs} do not match its "
                                  "mmguard metadata")

    # ------------------------------------------------------------------ description
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def fitted(self) -> bool:
        return True

    def capabilities(self) -> dict[str, bool]:
        return {"flag": self.flags, "correct": self.corrects, "predict": self.predicts}

    def check_matches(self, guard: Guard) -> None:
        """One-line :class:`SpecError` unless this graph was exported from a guard like ``guard``
        (same kind, modalities and shapes)."""
        if self.name != guard.name or self.specs != guard.specs:
            raise SpecError(f"ONNX model {str(self.path)!r} holds a {self.name!r} guard with modalities "
                            f"{[s.to_dict() for s in self.specs]}, not the {guard.name!r} guard with "
                            f"{[s.to_dict() for s in guard.specs]}")

    # ------------------------------------------------------------------ inference
    def _require_capability(self, flag: bool, verb: str) -> None:
        if not flag:
            can = [k for k, v in self.capabilities().items() if v]
            raise SpecError(f"guard {self.name!r} does not {verb}; it can: {', '.join(can)}")

    def _prepare(self, batch: MultimodalBatch) -> dict[str, np.ndarray]:
        """The checks of :meth:`mmguard.guard.Guard._prepare`; float32 arrays per modality."""
        check_input_batch(batch, self.name, self.specs)
        if len(batch) == 0:
            raise DataError("empty batch: nothing to score")
        return {n: np.ascontiguousarray(batch.modalities[n].detach().cpu().to(torch.float32).numpy())
                for n in self.names}

    def run(self, batch: MultimodalBatch, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's named ``outputs`` (default: all) of a raw batch, computed in chunks."""
        wanted = list(self.output_names if outputs is None else outputs)
        arrays = self._prepare(batch)
        n = len(batch)
        parts: list[list[Any]] = []
        for i in range(0, n, INFERENCE_CHUNK):
            feed = {k: v[i:i + INFERENCE_CHUNK] for k, v in arrays.items()}
            parts.append(self.session.run(wanted, feed))
        return {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(wanted)}

    def score(self, batch: MultimodalBatch) -> torch.Tensor:
        """(N, M) failure scores of a raw batch; 1.0 is the calibrated threshold of every modality."""
        self._require_capability(self.flags, "flag")
        return torch.from_numpy(self.run(batch, ["scores"])["scores"])

    def flag(self, batch: MultimodalBatch) -> torch.Tensor:
        """(N, M) booleans: modality m of sample n looks faulty (score > 1)."""
        self._require_capability(self.flags, "flag")
        return torch.from_numpy(self.run(batch, ["flags"])["flags"])

    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        """The corrected batch: same names, shapes, raw units and dtype as ``batch``."""
        self._require_capability(self.corrects, "correct data")
        fixed = self.run(batch, [f"fixed:{n}" for n in self.names])
        return batch.with_modalities({n: torch.from_numpy(fixed[f"fixed:{n}"]).to(batch.modalities[n].dtype)
                                      for n in self.names})

    def predict(self, batch: MultimodalBatch) -> torch.Tensor:
        """Predictions (N,) of the downstream task (guards that predict)."""
        self._require_capability(self.predicts, "predict")
        return torch.from_numpy(self.run(batch, ["prediction"])["prediction"])

    def __repr__(self) -> str:
        return f"OnnxGuard({str(self.path)!r}, kind={self.name!r}, modalities={list(self.names)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
