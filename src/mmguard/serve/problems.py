"""Request errors: one status code and one line of text, never a stack trace.

Every problem the service reports is a :class:`RequestError` carrying the HTTP status and a
one-line message; the app turns it into ``{"error": message, "status": code}``. mmguard's own
error classes map onto 4xx codes (:func:`from_mmguard`).
"""

from __future__ import annotations

from mmguard.errors import CheckpointError, DataError, MMGuardError, NotFittedError, SpecError

MAX_MESSAGE = 500  # characters; a message never echoes a whole request


class RequestError(Exception):
    """A request the service refuses: ``status`` (4xx, or 503 when busy) and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 3] + "..."
        super().__init__(text)
        self.status = int(status)
        self.message = text
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


class ServiceBusy(RequestError):
    """The bounded queue is full, or the service is shutting down (503, with ``Retry-After``)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, {"Retry-After": "1"})


#: status for each of mmguard's error classes (most specific first)
_STATUS: tuple[tuple[type[MMGuardError], int], ...] = (
    (NotFittedError, 409),  # e.g. a drift test on a guard fitted without drift detection
    (DataError, 422),
    (SpecError, 422),
    (CheckpointError, 422),
    (MMGuardError, 422),
)


def from_mmguard(exc: MMGuardError) -> RequestError:
    """The :class:`RequestError` for one of mmguard's one-line user errors."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return RequestError(status, str(exc))
    return RequestError(422, str(exc))  # pragma: no cover - MMGuardError is the last entry
