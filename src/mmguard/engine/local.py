"""The in-process engine: every job in this process, one after the other, in the order given."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from mmguard.engine import Job


class LocalEngine:
    """Runs ``fn(*job.args)`` here, in order — exactly what the commands did before engines existed."""

    name = "local"
    in_process = True

    def share(self, obj: Any) -> Any:
        """The object itself: nothing leaves this process."""
        return obj

    def map(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Hashable, Any]]:
        """Each job's result as soon as it is computed; an error stops the run at that job."""
        for job in jobs:
            yield job.key, fn(*job.args)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
