"""Fixtures of the baseline tests (tests/baselines); helpers in baselines_testutil.py."""

from __future__ import annotations

import pytest
from baselines_testutil import correlated_batch

from mmguard.data.splits import Splits, make_splits


@pytest.fixture(scope="session")
def correlated() -> Splits:
    return make_splits(correlated_batch(), seed=0)
