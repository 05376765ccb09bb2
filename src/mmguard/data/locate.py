"""Where dataset files are looked for.

Resolution order for a dataset called ``name`` (e.g. ``"htru2"``):

1. an explicit ``path`` argument: a file is used as is; a folder is searched (``path/<file>``
   and ``path/<name>/<file>``). Nothing else is tried — an explicit location is never silently
   replaced by another one;
2. an explicit ``data_dir`` argument (CLI ``--data-dir``): a folder laid out like
   ``$MMGUARD_DATA_DIR``; again nothing else is tried;
3. the environment variable ``MMGUARD_DATA_DIR``: a folder with one sub-folder per dataset,
   ``$MMGUARD_DATA_DIR/<name>/<file>``;
4. the user cache ``$XDG_CACHE_HOME/mmguard/<name>/<file>`` (default ``~/.cache/mmguard``),
   where downloads such as :func:`mmguard.data.htru2.download_htru2` are stored.

When nothing is found the DataError names every place that was searched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mmguard.errors import DataError

ENV_VAR = "MMGUARD_DATA_DIR"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmguard`` if ``XDG_CACHE_HOME`` is set, else ``~/.cache/mmguard``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmguard"


def env_data_dir() -> Path | None:
    """The folder named by ``MMGUARD_DATA_DIR``, or None when the variable is unset/empty."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def candidate_dirs(name: str, *, path: str | Path | None = None,
                   data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    if path is not None:
        p = Path(path).expanduser()
        return [p, p / name]
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return [d / name, d]
    dirs = []
    env = env_data_dir()
    if env is not None:
        dirs.append(env / name)
    dirs.append(user_cache_dir() / name)
    return dirs


def find_dataset_file(name: str, filenames: Sequence[str], *, path: str | Path | None = None,
                      data_dir: str | Path | None = None) -> Path:
    """First existing ``<dir>/<filename>`` over :func:`candidate_dirs` × ``filenames``.

    ``path`` may also be the data file itself. Raises a one-line DataError naming every
    location searched when nothing is found.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if not p.is_dir():
            raise DataError(f"{name} data not found: {str(p)!r} does not exist")
    dirs = candidate_dirs(name, path=path, data_dir=data_dir)
    for d in dirs:
        for fname in filenames:
            f = d / fname
            if f.is_file():
                return f
    looked = ", ".join(str(d) for d in dirs)
    hint = "" if path is not None or data_dir is not None else f"; set {ENV_VAR} or pass a path"
    raise DataError(f"{name} data not found: looked for {' or '.join(filenames)} in {looked}{hint}")
