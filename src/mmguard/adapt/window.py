"""The sliding window of a stream: the most recent samples, shared by the drift monitor and the
adaptation loops."""

from __future__ import annotations

from mmguard.data.model import MultimodalBatch, concat_batches


def recent(buffer: MultimodalBatch | None, chunk: MultimodalBatch, size: int) -> MultimodalBatch:
    """``buffer`` followed by ``chunk``, cut to its last ``size`` samples (never fewer than the chunk)."""
    joined = chunk if buffer is None else concat_batches([buffer, chunk])
    keep = max(size, len(chunk))
    return joined if len(joined) <= keep else joined.select(slice(len(joined) - keep, len(joined)))
