"""Helpers shared by test files (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations


def one_line(exc: BaseException, *words: str) -> str:
    """The error's text: one non-empty line that contains every word (case-insensitive)."""
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    for w in words:
        assert w.lower() in text.lower(), (w, text)
    return text
