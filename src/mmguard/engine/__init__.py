"""Execution engines: run independent jobs in-process (``local``) or on a Ray cluster (``ray``).

A *job* is one independent piece of a long command — a ``(guard, seed)`` unit of ``mmguard bench``,
an episode of ``mmguard twin generate``. Its arguments fully define its result (seeds derive from
the job, never from the worker that runs it), so any engine gives the numbers of the in-process
run. The caller keeps writing results (atomically, as they arrive); an engine only computes.

* :class:`~mmguard.engine.local.LocalEngine` — the jobs one after the other in this process, in
  order, exactly as without an engine;
* :class:`~mmguard.engine.ray_engine.RayEngine` — one Ray task per job (optional extra
  ``mmguard[ray]``; Ray is imported only when this engine is made). A worker that dies is
  replaced and its job retried; an error raised by the job itself (a bad config) is not retried
  and surfaces once. See ``docs/distributed.md``.

This package imports neither torch nor Ray at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mmguard.errors import SpecError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """One job: ``fn(*args)`` is its result; ``key`` names it in results and errors."""

    key: Hashable
    args: tuple[Any, ...] = field(default_factory=tuple)


@runtime_checkable
class Engine(Protocol):
    """What the commands need from an engine."""

    name: str
    #: True when jobs run in this process (results can refer to local files and objects).
    in_process: bool

    def share(self, obj: Any) -> Any:
        """A handle to ``obj`` to pass as a job argument (sent to the workers once, not per job)."""

    def map(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Hashable, Any]]:
        """Run ``fn(*job.args)`` for every job; yield ``(job.key, result)`` as each finishes.

        ``jobs`` may be a lazy iterable: it is consumed as jobs are submitted, and finished results
        are yielded while later jobs are still being prepared.
        """

    def close(self) -> None:
        """Release the engine's resources (a local Ray cluster it started)."""

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


def check_engine(name: str, address: str | None = None) -> str:
    """``name`` normalised, after the checks that need no cluster (a one-line error otherwise):
    a known engine, ``--address`` only with ``ray``, and Ray importable when asked for."""
    text = str(name).strip().lower()
    if text not in ENGINES:
        raise SpecError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    if text == "local" and address:
        raise SpecError("--address needs --engine ray (the local engine runs in this process)")
    if text == "ray":
        from mmguard.engine.ray_engine import import_ray

        import_ray()
    return text


def make_engine(name: str = "local", address: str | None = None, *, num_cpus: int | None = None,
                threads: int = 1, max_retries: int = 3) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); a one-line error for anything else.

    ``address`` (Ray only): an existing cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``);
    without it a local cluster with ``num_cpus`` CPUs (default: all) is started and shut down by
    :meth:`Engine.close`. ``threads``: torch threads in each Ray worker. ``max_retries``: how
    often the job of a dead worker is retried.
    """
    if check_engine(name, address) == "local":
        from mmguard.engine.local import LocalEngine

        return LocalEngine()
    from mmguard.engine.ray_engine import RayEngine

    return RayEngine(address, num_cpus=num_cpus, threads=threads, max_retries=max_retries)


__all__ = ["ENGINES", "Engine", "Job", "check_engine", "make_engine"]
