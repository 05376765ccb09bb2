"""Validated field types shared by the run configurations (bench, the EMMA and MMSSL protocols)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _distinct_seeds(v: list[int]) -> list[int]:
    if not v or len(set(v)) != len(v):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {v}")
    return v


def _distinct_names(v: list[str]) -> list[str]:
    if not v or len(set(v)) != len(v):
        raise ValueError(f"expected a non-empty list of distinct names, got {v}")
    return v


#: seeds of a run: non-empty, no repeats
SeedList = Annotated[list[int], AfterValidator(_distinct_seeds)]
#: names (guards, modalities): non-empty, no repeats
NameList = Annotated[list[str], AfterValidator(_distinct_names)]
