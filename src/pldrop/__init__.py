"""pldrop: Progressive Layer Dropping (Zhang & He, NeurIPS 2020) for any Hugging Face transformer.

>>> import pldrop
>>> round(pldrop.theta(1000), 4), pldrop.keep_probs(0.5, 2)
(0.6839, [0.75, 0.5])
"""

from .controller import PLDNotSteppedWarning, ProgressiveLayerDrop
from .errors import UserError
from .schedule import (SCHEDULES, constant_theta, expected_kept, gamma_for_steps, keep_probs, mean_expected_kept,
                       mean_theta, theta, theta_at_fraction, theta_at_step)

__version__ = "0.1.0"

__all__ = [
    "PLDNotSteppedWarning",
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
    "integrations",
    "keep_probs",
    "mean_expected_kept",
    "mean_theta",
    "remove_pld",
    "shrink",
    "theta",
    "theta_at_fraction",
    "theta_at_step",
]


# Names that need torch (the surgery) or optional libraries (transformers' Trainer, DeepSpeed) load
# on first use, so `import pldrop` -- and `pldrop --help` -- import neither torch nor transformers.
_LAZY = {
    "apply_pld": ".surgery",
    "find_block_lists": ".surgery",
    "get_controller": ".surgery",
    "remove_pld": ".surgery",
    "from_deepspeed_config": ".integrations.deepspeed",
    "shrink": ".prune",  # depth on demand: a model with K of its L blocks
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name == "integrations":  # README: pldrop.integrations.add_pld_callback(trainer)
        value = importlib.import_module(".integrations", __name__)
    else:
        raise AttributeError(f"module 'pldrop' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
