"""Fitted guard directories for the service tests, fitted once per session (a few seconds in all).

* ``vector`` — ``mmae`` (flags, corrects; default drift detector: window 100, step 25) on 1,200
  samples of the contract's three vector modalities, so the test split (198 samples) is long
  enough for a clean stream of several drift tests;
* ``emma`` — ``emma`` (flags, predicts) on 360 vector samples;
* ``image`` — ``mmae`` on the contract's 3x16x16 camera + 5-d kinematics (NPZ bodies);
* ``toy`` — :class:`serve_testutil.MaxAbsGuard` (batch-invariant, no drift detector).
"""

from __future__ import annotations

import pytest
from serve_testutil import Fitted, fit_and_save, toy_registered

from contract.test_guard_contract import image_batch, vector_batch


@pytest.fixture(scope="session")
def vector(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_and_save("mmae", vector_batch(1200), tmp_path_factory.mktemp("serve-vector") / "guard")


@pytest.fixture(scope="session")
def emma(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_and_save("emma", vector_batch(), tmp_path_factory.mktemp("serve-emma") / "guard")


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    return fit_and_save("mmae", image_batch(), tmp_path_factory.mktemp("serve-image") / "guard",
                        {"autoencoder": {"image_channels": [4, 8]}})


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    with toy_registered():
        return fit_and_save("serve_maxabs", vector_batch(), tmp_path_factory.mktemp("serve-toy") / "guard",
                            {"drift": None})
