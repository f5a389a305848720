"""pldrop: Progressive Layer Dropping (Zhang & He, NeurIPS 2020) for any Hugging Face transformer.

>>> import pldrop
>>> round(pldrop.theta(1000), 4), pldrop.keep_probs(0.5, 2)
(0.6839, [0.75, 0.5])
"""

from .controller import ProgressiveLayerDrop
from .errors import UserError
from .schedule import (SCHEDULES, constant_theta, expected_kept, gamma_for_steps, keep_probs, mean_expected_kept,
                       mean_theta, theta, theta_at_fraction, theta_at_step)
from .surgery import apply_pld, find_block_lists, get_controller, remove_pld

__version__ = "0.1.0"

__all__ = [
    "ProgressiveLayerDrop",
    "SCHEDULES",
    "UserError",
    "apply_pld",
    "constant_theta",
    "expected_kept",
    "find_block_lists",
    "from_deepspeed_config",
    "gamma_for_steps",
    "get_controller",
    "keep_probs",
    "mean_expected_kept",
    "mean_theta",
    "remove_pld",
    "shrink",
    "theta",
    "theta_at_fraction",
    "theta_at_step",
]


def __getattr__(name):  # keep `import pldrop` light: DeepSpeed interop loads on first use
    if name == "from_deepspeed_config":
        from .integrations.deepspeed import from_deepspeed_config

        return from_deepspeed_config
    if name == "shrink":  # depth on demand: a model with K of its L blocks (pldrop.prune)
        from .prune import shrink

        return shrink
    raise AttributeError(f"module 'pldrop' has no attribute {name!r}")
