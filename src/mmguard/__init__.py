"""mmguard: keep multimodal models working when a modality fails.

Detect the failing modality, attend away from it (EMMA), correct it back onto the
clean data manifold (MMSSL), and prove it with reproducible robustness benchmarks.
"""

from mmguard.errors import MMGuardError

__version__ = "0.1.0"
__all__ = ["MMGuardError", "__version__"]
