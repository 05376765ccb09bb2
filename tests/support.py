"""Helpers shared by test files (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import contextlib
import io

import torch

from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch


def one_line(exc: BaseException, *words: str) -> str:
    """The error's text: one non-empty line that contains every word (case-insensitive)."""
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    for w in words:
        assert w.lower() in text.lower(), (w, text)
    return text


def camera_kinematics(n: int = 300, seed: int = 0) -> MultimodalBatch:
    """A small two-class camera (1x8x8) + kinematics (4-d) dataset whose class shows in both."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    img = torch.rand(n, 1, 8, 8, generator=gen) * 0.2
    img[:, :, :4, :] += y.view(-1, 1, 1, 1) * 0.6
    kin = torch.randn(n, 4, generator=gen) * 0.3 + y.view(-1, 1) * 1.0
    specs = (ModalitySpec("camera", ModalityKind.IMAGE, (1, 8, 8)),
             ModalitySpec("kinematics", ModalityKind.VECTOR, (4,)))
    return MultimodalBatch({"camera": img, "kinematics": kin}, specs=specs, target=y)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run the ``mmguard`` CLI in-process: (exit code, stdout, stderr)."""
    from mmguard.cli.main import entrypoint

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = entrypoint(args)
    return rc, out.getvalue(), err.getvalue()
