"""Session-wide test settings.

The tests use tiny tensors; intra-op threads only add overhead and oversubscribe the CPU
under ``pytest -n 2`` (each worker would start one thread per core). Set
``MMGUARD_TEST_THREADS`` to override.
"""

from __future__ import annotations

import os

import torch

torch.set_num_threads(int(os.environ.get("MMGUARD_TEST_THREADS", "1")))
