"""Small directories as bytes, so that a worker without the driver's filesystem can hand them over.

A remote job saves what it made (a fitted guard: safetensors + JSON) to a temporary directory and
returns :func:`read_tree` of it; the driver writes it into the run directory with
:func:`write_tree`, every file atomically and the completion marker (``guard.json``) last, so an
interrupted write never looks finished.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from mmguard.errors import CheckpointError
from mmguard.io.atomic import atomic_write


def read_tree(directory: str | Path) -> dict[str, bytes]:
    """Every file under ``directory``: {relative POSIX path: bytes} (sorted by path)."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"missing directory {str(root)!r}")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tree(directory: str | Path, files: dict[str, bytes], *, last: str | None = None) -> None:
    """Write ``files`` (from :func:`read_tree`) under ``directory``; ``last`` (a file name) is written last."""
    root = Path(directory)
    order = sorted(files, key=lambda name: (PurePosixPath(name).name == last, name))
    for name in order:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise CheckpointError(f"refusing to write {name!r} outside {str(root)!r}")
        data = files[name]

        def write(tmp: str, data: bytes = data) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)

        atomic_write(root.joinpath(*rel.parts), write)
