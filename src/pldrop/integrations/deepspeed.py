"""Read DeepSpeed's ``progressive_layer_drop`` config block, so DeepSpeed users can switch.

DeepSpeed (<= 0.19.7) implements only θ(t): when its block is enabled, the engine passes
``progressive_layer_drop=True, pld_theta=θ`` to the model's forward and leaves dropping to
the model. Keep that block disabled in the config handed to ``deepspeed.initialize`` and let
pldrop do the dropping -- otherwise a model that honours those keyword arguments drops twice,
and an HF model receives keyword arguments it does not expect.
"""

from __future__ import annotations

import copy
import importlib
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


# --- running pldrop's PLD under a DeepSpeed engine ---------------------------------------------


def zero_stage(config: dict | str | Path) -> int:
    """The ZeRO stage a DeepSpeed config asks for (0 when it has no ``zero_optimization``).

    >>> zero_stage({"zero_optimization": {"stage": 2}}), zero_stage({})
    (2, 0)
    """
    return int((_load(config).get("zero_optimization") or {}).get("stage", 0))


def initialize_with_pld(model, config: dict | str | Path, *, seed: int = 0, rule: str = "linear",
                        rescale: bool = True, layers=None, **initialize_kwargs):
    """``apply_pld`` from the config's ``progressive_layer_drop`` block, then ``deepspeed.initialize``.

    DeepSpeed receives :func:`without_pld` of the config, so its own PLD stays off
    (``engine.progressive_layer_drop is None``) and blocks are dropped once, by pldrop. Drive
    the controller with :func:`sync_step` before each forward and, at ZeRO stage 0, call
    :func:`release_skipped_grads` between ``engine.backward`` and ``engine.step``.

    What works (verified on CPU, gloo, 2 ranks, fp32; see docs/distributed.md):

    - ZeRO 0: DeepSpeed all-reduces a zero gradient for every parameter without one;
      :func:`release_skipped_grads` turns those back into ``None`` so AdamW leaves skipped
      blocks alone, and training matches DDP / one process.
    - ZeRO 1 and 2: run, because pldrop's gates are the same on every rank (with different
      gates per rank the bucketed reduction mismatches and gloo aborts). But the optimizer
      steps flat fp32 partitions into which DeepSpeed writes zeros for parameters without a
      gradient, so skipped blocks still receive weight decay and Adam momentum; that cannot be
      undone from outside the optimizer, and a warning says so.

    Args:
        model: the ``nn.Module`` (e.g. an HF model).
        config: DeepSpeed config (dict or JSON path) with an enabled ``progressive_layer_drop``
            block; without one, no PLD is applied and the controller returned is ``None``.
        seed, rule, rescale, layers: passed to :func:`pldrop.apply_pld` (DeepSpeed's block has
            only ``theta`` and ``gamma``). Use the same ``seed`` on every rank.
        **initialize_kwargs: passed to ``deepspeed.initialize`` (``optimizer=``,
            ``model_parameters=``, ``training_data=``, ...).

    Returns:
        ``(engine, optimizer, dataloader, lr_scheduler, controller)``.
    """
    import deepspeed

    from ..surgery import apply_pld

    cfg = _load(config)
    pld = from_deepspeed_config(cfg, engine_uses_config=False)
    ctl = None
    if pld is not None:
        ctl = apply_pld(model, seed=seed, rule=rule, rescale=rescale, layers=layers, **pld)
        if zero_stage(cfg) >= 1:
            warnings.warn(
                f"ZeRO stage {zero_stage(cfg)}: DeepSpeed gives blocks PLD skipped a zero gradient inside its "
                "flat optimizer partitions, so the optimizer still applies weight decay and momentum to them; "
                "ZeRO stage 0 (with release_skipped_grads) leaves them untouched",
                stacklevel=2,
            )
    engine, optimizer, dataloader, scheduler = deepspeed.initialize(model=model, config=without_pld(cfg),
                                                                    **initialize_kwargs)
    return engine, optimizer, dataloader, scheduler, ctl


def sync_step(ctl, engine) -> float:
    """Bring the controller to ``engine.global_steps``; call before every forward.

    Steps only when the optimizer step changed, so the micro-batches of one step (gradient
    accumulation) keep drawing fresh gates (micro-step 0, 1, ...), and a resumed engine
    continues the schedule and the gates where it stopped. Returns θ.
    """
    if ctl.global_step != engine.global_steps:
        ctl.step(engine.global_steps)
    return ctl.theta


def release_skipped_grads(ctl, engine) -> int:
    """At ZeRO stage 0, on the last micro-batch of a step: ``ctl.release_skipped_grads()``.

    Call between ``engine.backward(loss)`` and ``engine.step()``. At stage 0 DeepSpeed has just
    all-reduced a zero gradient into every skipped parameter; setting it back to ``None`` makes
    the optimizer skip those blocks. At ZeRO 1/2 the gradients already live in DeepSpeed's
    partitions, so this does nothing and returns 0. Returns the number of parameters released.
    """
    if engine.zero_optimization_stage() != 0 or not engine.is_gradient_accumulation_boundary():
        return 0
    return ctl.release_skipped_grads()


def engine_for_pretraining(module, optimizer, config: dict | str | Path, *, micro_batch: int, grad_accum: int,
                           world: int, clip_grad: float):
    """``deepspeed.initialize`` for ``pldrop pretrain --deepspeed``: pldrop's optimizer and lr, DeepSpeed's ZeRO.

    The config's batch sizes and clipping are filled from pldrop's settings (a conflicting value
    is an error); its ``progressive_layer_drop`` block is read by the caller and switched off
    here, so blocks are dropped once, by pldrop. ``optimizer`` / ``scheduler`` sections are
    refused: pldrop sets AdamW and the lr schedule itself.
    """
    try:
        import deepspeed
    except ImportError:
        raise UserError("--deepspeed needs DeepSpeed: pip install 'pldrop[deepspeed]' (deepspeed==0.19.7)") from None
    cfg = without_pld(config)
    for key in ("optimizer", "scheduler"):
        if key in cfg:
            raise UserError(f"DeepSpeed config has a {key!r} section; remove it: pldrop sets AdamW and its "
                            "lr schedule (optim.* settings)")
    wanted = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": grad_accum,
              "train_batch_size": micro_batch * grad_accum * world}
    for key, value in wanted.items():
        if cfg.get(key, value) != value:
            raise UserError(f"DeepSpeed config sets {key}={cfg[key]}, but pldrop's settings give {value}; "
                            "remove it from the config or change optim.batch_size / optim.grad_accum")
        cfg[key] = value
    cfg.setdefault("gradient_clipping", clip_grad)
    cfg.setdefault("steps_per_print", 10**9)
    if not torch_cuda_available():
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op for inference at start
        # (minutes of C++ compilation, unused in training); skip it
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    import torch.distributed as dist

    if not dist.is_initialized():  # one process, not launched by torchrun: a group of one
        import os
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"),
                           ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(key, value)
        dist.init_process_group("nccl" if torch_cuda_available() else "gloo")
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=cfg)
    return engine


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
