"""Helpers shared by CLI commands: error reporting, JSON output, seeds, progress."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from mmguard.errors import MMGuardError
from mmguard.io.jsonio import jsonable as _jsonable

SEED_OPTION = typer.Option(0, "--seed", help="Seed for every stochastic step (same seed, same numbers).")
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")
ENGINE_OPTION = typer.Option("local", "--engine", help="Where the jobs run: local (this process) or ray "
                             "(Ray tasks; pip install 'mmguard\\[ray]'; docs/distributed.md). Same results.")
ADDRESS_OPTION = typer.Option(None, "--address", help="With --engine ray: an existing cluster (HOST:PORT from "
                              "`ray start --head`, or auto); default a local cluster on this machine's CPUs.")


def fail(message: str) -> None:
    """Raise the one-line user error the entrypoint prints before exiting with code 2."""
    raise MMGuardError(message)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2) + "\n")
