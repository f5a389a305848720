"""Read DeepSpeed's ``progressive_layer_drop`` config block, so DeepSpeed users can switch.

DeepSpeed (<= 0.19.7) implements only θ(t): when its block is enabled, the engine passes
``progressive_layer_drop=True, pld_theta=θ`` to the model's forward and leaves dropping to
the model. Keep that block disabled in the config handed to ``deepspeed.initialize`` and let
pldrop do the dropping -- otherwise a model that honours those keyword arguments drops twice,
and an HF model receives keyword arguments it does not expect.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..schedule import check_gamma, check_theta_bar

KEY = "progressive_layer_drop"


def _load(config: dict | str | Path) -> dict:
    if isinstance(config, dict):
        return config
    path = Path(config)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"DeepSpeed config {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"DeepSpeed config {str(path)!r} is not valid JSON: {e}") from None


def from_deepspeed_config(config: dict | str | Path, engine_uses_config: bool = True) -> dict[str, Any] | None:
    """``apply_pld`` keyword arguments from a DeepSpeed config (a dict or a JSON file path).

    Returns ``None`` when the config has no enabled ``progressive_layer_drop`` block;
    DeepSpeed's defaults (θ̄ = 0.5, γ = 0.001) fill missing values.

    Args:
        config: the DeepSpeed config.
        engine_uses_config: whether this same config also goes to ``deepspeed.initialize``;
            then an enabled block means double dropping, and a warning says so (pass the
            output of :func:`without_pld` to DeepSpeed instead).

    >>> from_deepspeed_config({"progressive_layer_drop": {"enabled": True, "theta": 0.6,
    ...                        "gamma": 0.002}}, engine_uses_config=False)
    {'theta_bar': 0.6, 'gamma': 0.002}
    >>> from_deepspeed_config({"train_batch_size": 8}) is None
    True
    """
    block = _load(config).get(KEY)
    if not block or not block.get("enabled", False):
        return None
    kwargs = {"theta_bar": check_theta_bar(block.get("theta", 0.5)), "gamma": check_gamma(block.get("gamma", 0.001))}
    if engine_uses_config:
        warnings.warn(
            "the DeepSpeed config enables progressive_layer_drop: if the same config reaches "
            "deepspeed.initialize, DeepSpeed's engine will also act on it (double dropping). "
            "Give DeepSpeed pldrop.integrations.deepspeed.without_pld(config) instead.",
            stacklevel=2,
        )
    return kwargs


def without_pld(config: dict | str | Path) -> dict:
    """A copy of the DeepSpeed config with its ``progressive_layer_drop`` block disabled.

    >>> without_pld({"progressive_layer_drop": {"enabled": True}})[KEY]["enabled"]
    False
    """
    out = copy.deepcopy(_load(config))
    if KEY in out:
        out[KEY] = {**out[KEY], "enabled": False}
    return out
