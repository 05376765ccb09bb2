"""EMMA: energy-based multi-modal attention (Werenne 2019, thesis chapters 4-6 and 8).

* :mod:`~mmguard.emma.potential` — tied-weight DAE and its potential energy (ch. 4)
* :mod:`~mmguard.emma.attention` — energies, importance, attention, capacity (ch. 5)
* :mod:`~mmguard.emma.network` — EMMA in front of any prediction network
* :mod:`~mmguard.emma.training` — the training stages, batched over configurations x seeds
* :mod:`~mmguard.emma.data` — class count, the section 6.3.1 corruption schedule, stream stacking
* :mod:`~mmguard.emma.guard` — :class:`EmmaGuard`, the registered guard
* :mod:`~mmguard.emma.reference` — per-sample reference implementation (test oracle, benchmark)

The thesis protocol, report and plots live in :mod:`mmguard.experiments.emma`.
"""

from mmguard.emma.attention import AttentionOutput, EmmaAttention, energy_regularizer
from mmguard.emma.guard import EmmaGuard, EmmaGuardConfig
from mmguard.emma.network import EmmaNetwork
from mmguard.emma.potential import TiedDAE, fit_dae

__all__ = [
    "AttentionOutput",
    "EmmaAttention",
    "EmmaGuard",
    "EmmaGuardConfig",
    "EmmaNetwork",
    "TiedDAE",
    "energy_regularizer",
    "fit_dae",
]
