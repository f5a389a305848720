"""Integrations with trainers and launchers: HF Trainer callback, DeepSpeed configs and engine.

Names load on first use, so ``import pldrop.integrations`` imports neither transformers'
Trainer nor DeepSpeed.

>>> import pldrop.integrations as I
>>> sorted(I.__all__)[:2]
['PLDCallback', 'add_pld_callback']
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_NAMES = {
    "PLDCallback": "hf_trainer",
    "add_pld_callback": "hf_trainer",
    "check_training_args": "hf_trainer",
    "from_deepspeed_config": "deepspeed",
    "without_pld": "deepspeed",
    "initialize_with_pld": "deepspeed",
}

__all__ = sorted(_NAMES)


def defer_deepspeed_probe() -> None:
    """Keep ``accelerate`` from importing DeepSpeed when nothing asked for it.

    ``accelerate.utils.other.extract_model_from_parallel`` (called by every ``save_pretrained``)
    imports ``deepspeed`` whenever it is installed, to test ``isinstance(model, DeepSpeedEngine)``;
    the import costs seconds and prints DeepSpeed's "Setting accelerator to CPU" warning. A
    ``DeepSpeedEngine`` cannot exist before ``deepspeed`` is imported, so the test is answered
    "not available" until then -- the same result, without the import. Once a run imports
    DeepSpeed (``--deepspeed``), accelerate's own check applies. Idempotent; the pldrop command
    line calls it at start.
    """
    mod = sys.modules.get("accelerate.utils.other")
    if mod is not None:
        _wrap_probe(mod)
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("accelerate.utils.other", _wrap_probe))


def _wrap_probe(mod) -> None:
    probe = getattr(mod, "is_deepspeed_available", None)
    if probe is None or getattr(probe, "_pldrop", False):
        return

    def is_deepspeed_available() -> bool:
        return "deepspeed" in sys.modules and probe()

    is_deepspeed_available._pldrop = True
    mod.is_deepspeed_available = is_deepspeed_available


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``fn(module)`` right after ``name`` is first imported (then step out of the way)."""

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, fn = spec.loader, self.fn

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                fn(module)

            def __getattr__(self, name):  # get_source, is_package, ... as the real loader
                return getattr(loader, name)

        spec.loader = _Loader()
        return spec


_SUBMODULES = ("ddp", "deepspeed", "fsdp", "hf_trainer")  # README: pldrop.integrations.deepspeed.without_pld(...)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
