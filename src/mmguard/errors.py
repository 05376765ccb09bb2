"""One exception type for every user-facing error.

Library code raises :class:`MMGuardError` (or a subclass) with a single line that names the
problem and the offending value. The CLI turns it into that line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations


class MMGuardError(ValueError):
    """A problem with the user's input: shapes, values, names, configs or files."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message on one line: the CLI prints it verbatim.
        super().__init__(" ".join(str(message).split()))


class DataError(MMGuardError):
    """Malformed or missing data (files, arrays, shapes, non-finite values)."""


class SpecError(MMGuardError):
    """Malformed fault spec, config or unknown name (modality, fault type, dataset)."""


class CheckpointError(MMGuardError):
    """A checkpoint or run directory that cannot be read safely."""


class NotFittedError(MMGuardError):
    """A guard or model used before ``fit`` or ``load``."""


class EngineError(MMGuardError):
    """An execution engine that cannot run: not installed, unreachable, or a worker that kept dying."""
