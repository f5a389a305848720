"""Integrations with trainers and launchers: HF Trainer callback, DeepSpeed configs and engine.

Names load on first use, so ``import pldrop.integrations`` imports neither transformers'
Trainer nor DeepSpeed.

>>> import pldrop.integrations as I
>>> sorted(I.__all__)[:2]
['PLDCallback', 'add_pld_callback']
"""

from __future__ import annotations

import importlib

_NAMES = {
    "PLDCallback": "hf_trainer",
    "add_pld_callback": "hf_trainer",
    "check_training_args": "hf_trainer",
    "from_deepspeed_config": "deepspeed",
    "without_pld": "deepspeed",
    "initialize_with_pld": "deepspeed",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
