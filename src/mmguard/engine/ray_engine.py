"""The Ray engine: one Ray Core task per job, on a local cluster or an existing one (``--address``).

Decisions (docs/distributed.md):

* **Retries only for dead workers.** Each task has ``max_retries`` (a worker process or node that
  dies — killed, out of memory — is replaced and the job runs again from its arguments) and
  ``retry_exceptions=False``: an error raised by the job itself (a bad config, bad data) is the
  same on every try, so it surfaces once, as the original :class:`~mmguard.errors.MMGuardError`.
* **Results in completion order.** :meth:`RayEngine.map` yields each result as it finishes, so the
  caller writes it at once; a driver killed mid-run loses only the jobs still running.
* **Threads.** Each task reserves one CPU (``threads`` with more) and sets torch to ``threads``
  threads, so N jobs on N CPUs do not oversubscribe them.
* **Lazy import.** Ray is imported when the engine is made; without it the error names the
  extra to install.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from mmguard.engine import Job
from mmguard.errors import EngineError, MMGuardError, SpecError

INSTALL_HINT = "pip install 'mmguard[ray]'"
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`EngineError` saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name == "ray" or exc.name.startswith("ray."):
            raise EngineError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
        raise
    return ray


def limit_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in this worker (torch now if imported, else when it is)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_job(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """What every Ray task runs: ``fn(*args)`` with the thread limit applied first."""
    limit_threads(threads)
    result = fn(*args)
    limit_threads(threads)  # a job that imported torch late still leaves the worker at the limit
    return result


def check_address(address: str) -> None:
    """Refuse, in one line and within seconds, a ``HOST:PORT`` where nothing listens.

    (``ray.init`` itself retries an unreachable address for minutes.) ``auto`` and ``ray://``
    client addresses are left to Ray.
    """
    text = address.strip()
    if text == "auto" or "://" in text:
        return
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SpecError(f"bad Ray address {address!r}; use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT "
                        "or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EngineError(f"cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); start one with "
                          "`ray start --head` or leave out --address for a local cluster") from None


class RayEngine:
    """Jobs as Ray tasks (see the module docstring)."""

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, threads: int = 1,
                 max_retries: int = 3) -> None:
        if threads < 1 or max_retries < 0:
            raise SpecError(f"threads must be >= 1 and max_retries >= 0, got {threads} and {max_retries}")
        ray = import_ray()
        self._ray = ray
        self.threads = int(threads)
        self.max_retries = int(max_retries)
        self._owns = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address:
                check_address(address)
                options["address"] = address
            else:
                options["num_cpus"] = num_cpus
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
                raise EngineError(f"cannot start or join {where}: {' '.join(str(exc).split())[:300]}") from None
            self._owns = True
        self._task = ray.remote(run_job)

    def share(self, obj: Any) -> Any:
        """``ray.put(obj)``: stored once in the cluster; a task given the handle receives the object."""
        return self._ray.put(obj)

    def _submit(self, fn: Callable[..., Any], job: Job) -> Any:
        return self._task.options(num_cpus=self.threads, max_retries=self.max_retries, retry_exceptions=False,
                                  name=f"mmguard:{job.key}").remote(fn, self.threads, *job.args)

    def _result(self, ref: Any, key: Hashable) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the job raised: its own error, once
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MMGuardError):
                raise cause.with_traceback(None) from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.RaySystemError) as exc:
            raise EngineError(f"job {key} failed after {self.max_retries + 1} tries: {type(exc).__name__} "
                              "(finished jobs are kept; rerun the same command to resume)") from None

    def map(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Hashable, Any]]:
        """Submit every job (consuming ``jobs`` lazily) and yield ``(key, result)`` in completion order."""
        ray = self._ray
        pending: dict[Any, Hashable] = {}
        try:
            for job in jobs:
                pending[self._submit(fn, job)] = job.key
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in done:
                    key = pending.pop(ref)
                    yield key, self._result(ref, key)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    yield key, self._result(ref, key)
        finally:
            for ref in pending:  # an error or an interrupted caller: stop the jobs still running
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the cluster connection this engine opened (a local cluster stops with it)."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
