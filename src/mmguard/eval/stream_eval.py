"""Evaluate any guard on a split that stays on disk (datasets larger than memory, issue #13).

:func:`evaluate_stream` walks a raw :class:`~mmguard.data.stream.RowSource` in chunks that end on
episode boundaries (so temporal faults see whole episodes), corrupts each chunk with a fault spec
(chunk j with seed ``derive_seed(seed, "stream-eval", j)``) in the standardised units of the guard's
training split — as ``mmguard bench`` does, so a severity means the same on every dataset — hands
the guard the faulty chunk in raw units (:func:`mmguard.eval.guard_eval.evaluate_guard`'s verbs:
``score_and_transform``, ``score``, ``transform``) and keeps only per-sample numbers — the (N, M)
reconstruction errors against the clean chunk, the (N, M) normalised scores and the (N, M) fault
mask — never the data. The summaries are those of the in-memory evaluation
(:func:`~mmguard.eval.guard_eval.error_summary`,
:func:`~mmguard.eval.guard_eval.detection_summary`), computed on the concatenated per-sample
numbers, so a streamed and an in-memory evaluation of the same rows under the same draw agree
exactly; the draw itself is per chunk, so it is not the in-memory draw of the whole split.
"""

from __future__ import annotations

from typing import Any

import torch

from mmguard.data.stream import RowSource, iter_chunks, return_freed_memory
from mmguard.errors import NotFittedError
from mmguard.eval.guard_eval import detection_summary, error_summary, modality_errors
from mmguard.faults import FaultSpec, apply_faults
from mmguard.guard import Guard
from mmguard.seeding import derive_seed


def evaluate_stream(guard: Guard, source: RowSource, spec: FaultSpec | None, *, seed: int = 0,
                    chunk_rows: int = 340, group_key: str = "episode") -> dict[str, Any]:
    """Errors (correcting guards) and detection (flagging guards) of ``guard`` on ``source`` under
    ``spec`` (None: clean), in chunks of about ``chunk_rows`` rows; JSON-ready, plus ``n``."""
    if not guard.fitted or guard.standardizer is None:
        raise NotFittedError(f"guard {guard.name!r} is not fitted: call fit() or load_guard() first")
    st = guard.standardizer
    return_freed_memory()
    errs, scores, masks = [], [], []
    for j, raw in enumerate(iter_chunks(source, chunk_rows, group_key)):
        clean = st.transform(raw)
        faulty_std = clean if spec is None else apply_faults(clean, spec, seed=derive_seed(seed, "stream-eval", j))
        faulty = st.inverse(faulty_std)
        masks.append(faulty.mask_or_clean())
        fixed = None
        if guard.corrects and guard.flags:
            s, fixed = guard.score_and_transform(faulty)
            scores.append(s)
        elif guard.corrects:
            fixed = guard.transform(faulty)
        elif guard.flags:
            scores.append(guard.score(faulty))
        if fixed is not None:
            errs.append(modality_errors(st.transform(fixed), clean))
    if not masks:
        raise ValueError(f"{source.where}: nothing to evaluate (empty split)")
    mask = torch.cat(masks)
    faulty_rows = mask.any(1)
    out: dict[str, Any] = {"n": int(len(mask)), "n_faulty": int(faulty_rows.sum())}
    if errs:
        err = torch.cat(errs)
        out["errors"] = {"all": error_summary(err, guard.names, torch.ones_like(faulty_rows)),
                         "faulty": error_summary(err, guard.names, faulty_rows),
                         "clean": error_summary(err, guard.names, ~faulty_rows)}
    if scores:
        out["detection"] = detection_summary(torch.cat(scores), mask)
    return out
