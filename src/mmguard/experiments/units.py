"""Resumable runs: finished units of work saved atomically, skipped on a rerun with the same settings.

A long command (``mmguard bench``, ``mmguard mmssl run``, ``mmguard emma run``) splits its work
into units — a (guard, seed) job, an MMSSL seed, EMMA's batched Experiment II, its chapter-4
experiments — and writes each finished unit to ``DIR/units/<key>.json`` (atomically: a killed run
never leaves half a unit). ``DIR/units/run.json`` records the fingerprint of everything that
changes the numbers: the configuration (without thread counts or the device) and the data
(split sizes, training statistics, sums of the validation and test values). A rerun into the
same directory with the same fingerprint reuses the finished units; a different fingerprint is
refused with one line, so results of two configurations are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mmguard.data.preprocessing import Standardizer
from mmguard.data.splits import Splits
from mmguard.errors import CheckpointError
from mmguard.io.checkpoint import read_json, write_json
from mmguard.io.jsonio import jsonable


@contextmanager
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def data_fingerprint(splits: Splits, st: Standardizer | None = None) -> str:
    """Hash of split sizes, training statistics and validation/test value sums.

    Computed on one thread: multi-threaded float reductions differ in the last bits with the thread
    count, and a run must resume with the same data whatever the thread count (a weld-twin bench
    started with 1 thread was refused when resumed with 2). Raw splits get their statistics fitted
    here, on one thread (``st`` is then not used); standardised splits (the protocols) hash their
    own standardiser, so their fingerprint holds for one thread count only.
    """
    with _one_thread():
        if not splits.standardized:
            st = Standardizer.fit(splits.train)
        st = st or splits.standardizer or Standardizer.fit(splits.train)
        h = hashlib.sha256(json.dumps(splits.sizes(), sort_keys=True).encode())
        for name in splits.train.names:
            h.update(st.mean[name].double().numpy().tobytes())
            h.update(st.std[name].double().numpy().tobytes())
        for part in (splits.val, splits.test):
            for name in part.names:
                h.update(part.modalities[name].double().sum().numpy().tobytes())
        return h.hexdigest()[:16]


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jsonable(config), sort_keys=True).encode()).hexdigest()[:16]


class RunUnits:
    """The finished units of one run directory (see the module docstring).

    A unit may carry its own settings (``salt``, e.g. a guard's config in ``mmguard bench``): its
    fingerprint is then that of (run fingerprint, salt), so units of different settings can share a
    run — a benchmark grows by guards and seeds without refitting the finished ones.

    ``migrate``: a function called with the fingerprint found in ``run.json`` when it differs; it
    returns a function mapping a unit key to its fingerprint under the older rule (or None if the
    run is not an older form of this one), and every unit stamped that way is re-stamped with the
    current rule before anything is reused.
    """

    def __init__(self, out: str | Path, config: dict[str, Any], *, method: str,
                 migrate: Callable[[str], Callable[[str], str | None] | None] | None = None) -> None:
        self.dir = Path(out) / "units"
        self.fingerprint = fingerprint({"method": method, **config})
        self.salts: dict[str, Any] = {}
        marker = self.dir / "run.json"
        if marker.is_file():
            old = read_json(marker)
            found = old.get("fingerprint") if isinstance(old, dict) else None
            older = migrate(found) if migrate is not None and isinstance(found, str) else None
            if found != self.fingerprint and older is None:
                raise CheckpointError(
                    f"{str(out)!r} holds a {method} run with a different configuration or data; "
                    "use another --out (or delete it)"
                )
            self._older = older
        else:
            self._older = None
            write_json(marker, {"method": method, "fingerprint": self.fingerprint})

    def salt(self, key: str, salt: Any) -> None:
        """Declare the settings of unit ``key`` (before :meth:`load` / :meth:`save` of it)."""
        self.salts[key] = salt

    def unit_fingerprint(self, key: str) -> str:
        if key not in self.salts:
            return self.fingerprint
        return fingerprint({"run": self.fingerprint, "unit": self.salts[key]})

    def finish_migration(self, method: str) -> None:
        """Re-stamp every unit written under the older rule (keys declared so far), then the marker."""
        if self._older is None:
            return
        for path in sorted(self.dir.rglob("*.json")):
            key = str(path.relative_to(self.dir).with_suffix(""))
            if key == "run":
                continue
            unit = read_json(path)
            if isinstance(unit, dict) and unit.get("fingerprint") == self._older(key):
                write_json(path, {"fingerprint": self.unit_fingerprint(key), "payload": unit["payload"]})
        write_json(self.dir / "run.json", {"method": method, "fingerprint": self.fingerprint})
        self._older = None

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved payload of a finished unit, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        unit = read_json(path)
        if not isinstance(unit, dict) or unit.get("fingerprint") != self.unit_fingerprint(key):
            return None
        return unit["payload"]

    def save(self, key: str, payload: dict[str, Any]) -> None:
        write_json(self._path(key), {"fingerprint": self.unit_fingerprint(key), "payload": payload})
