"""PLD under the Hugging Face ``Trainer``: a callback that steps the controller and logs θ.

    ctl = pldrop.apply_pld(model, theta_bar=0.5, gamma=pldrop.gamma_for_steps(max_steps))
    trainer = Trainer(model=model, args=TrainingArguments(..., ddp_find_unused_parameters=True), ...)
    add_pld_callback(trainer)          # or Trainer(..., callbacks=[PLDCallback(ctl)])
    trainer.train()

What the callback does, per Trainer event (transformers 5.x):

- ``on_train_begin``: a controller without ``total_steps`` gets the Trainer's ``max_steps`` (the run's
  length, which every depth schedule but ``pld`` needs).
- ``on_step_begin`` (first micro-batch of each optimizer step): ``ctl.step(state.global_step)``,
  so θ follows the optimizer step and gates stay a function of (seed, step, micro-step, block):
  every DDP rank draws the same gates, and a resumed run draws the gates an unbroken run draws.
- ``on_pre_optimizer_step`` (after clipping, before ``optimizer.step()``):
  ``ctl.release_skipped_grads()``, so a block skipped by every forward of the step has
  ``grad = None`` and AdamW leaves it alone (no momentum, no weight decay) even where
  something left a zero gradient on it (see docs/distributed.md for when that happens).
- ``on_log``: adds ``pld/theta``, ``pld/expected_kept`` and ``pld/kept`` (blocks run per
  training forward, averaged since the previous log) to the training logs.

Trainer calls reporters (TensorBoard, W&B, ...) before callbacks passed in ``callbacks=``, so
values a late callback adds to the logs reach ``state.log_history`` (we patch it) but not
those reporters; :func:`add_pld_callback` puts the callback first so they see them too.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..controller import ProgressiveLayerDrop
from ..surgery import get_controller


class PLDCallback(TrainerCallback):
    """Drive a :class:`~pldrop.ProgressiveLayerDrop` controller from ``transformers.Trainer``.

    Args:
        controller: the controller :func:`pldrop.apply_pld` returned; ``None`` finds it on the
            Trainer's model at ``on_train_begin`` (:func:`pldrop.get_controller`).
        release_grads: call ``controller.release_skipped_grads()`` before each optimizer step.
            Only valid while every rank draws the same gates (the same ``seed``), which
            :func:`pldrop.apply_pld` guarantees unless you give ranks different seeds.
    """

    def __init__(self, controller: ProgressiveLayerDrop | None = None, release_grads: bool = True):
        self.ctl = controller
        self.release_grads = bool(release_grads)
        self.released = 0  # parameters released over the run (a diagnostic)
        self._kept_sum, self._forwards = 0.0, 0

    # --- events ---------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.ctl is None:
            self.ctl = get_controller(model) if model is not None else None
            if self.ctl is None:
                raise ValueError(
                    f"PLDCallback: the Trainer's model ({type(model).__name__}) has no PLD controller; "
                    "call pldrop.apply_pld(model, ...) before building the Trainer, or pass PLDCallback(ctl)"
                )
        check_training_args(args, model)
        if self.ctl.total_steps is None and getattr(state, "max_steps", 0):  # a depth schedule's run length
            self.ctl.total_steps = int(state.max_steps)
        self.ctl.step(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.ctl.step(state.global_step)

    def on_substep_end(self, args, state, control, **kwargs):  # a micro-batch without an optimizer step
        self._count()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._count()
        if self.release_grads:
            self.released += self.ctl.release_skipped_grads()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.ctl is None:  # training logs only, not eval/summary
            return
        vals = self.log_values()
        logs.update(vals)
        # Trainer.log appended a copy of `logs` to the history before calling us
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(vals)

    # --- helpers --------------------------------------------------------------------------

    def _count(self) -> None:
        if self.ctl is not None and self.ctl.last_kept is not None:
            self._kept_sum += sum(self.ctl.last_kept)
            self._forwards += 1

    def log_values(self) -> dict[str, float]:
        """θ of the latest step, expected blocks kept, mean blocks run per forward since last call."""
        out = {"pld/theta": float(self.ctl.theta), "pld/expected_kept": self.ctl.expected_kept}
        if self._forwards:
            out["pld/kept"] = self._kept_sum / self._forwards
        self._kept_sum, self._forwards = 0.0, 0
        return out


def check_training_args(args: Any, model: Any = None) -> None:
    """Raise if a distributed Trainer would build DDP without ``find_unused_parameters``.

    transformers 5.x builds DDP with ``find_unused_parameters = args.ddp_find_unused_parameters``
    when set, else ``True`` for a ``PreTrainedModel`` without gradient checkpointing, else
    ``False``; with ``False`` the first step that skips a block fails inside DDP.
    """
    if getattr(args, "world_size", 1) <= 1 or getattr(args, "deepspeed", None):
        return
    find = getattr(args, "ddp_find_unused_parameters", None)
    ckpt = any(bool(getattr(args, k, False)) for k in ("activation_checkpointing", "gradient_checkpointing")) or any(
        bool(getattr(model, k, False)) for k in ("is_activation_checkpointing", "is_gradient_checkpointing")
    )
    if find is False or (find is None and ckpt):
        raise ValueError(
            f"ddp_find_unused_parameters={find!r}"
            + (" with gradient checkpointing" if find is None else "")
            + ": PLD skips blocks, so DDP needs TrainingArguments(ddp_find_unused_parameters=True)"
        )


def add_pld_callback(trainer: Any, controller: ProgressiveLayerDrop | None = None, **kwargs) -> PLDCallback:
    """Add a :class:`PLDCallback` to ``trainer`` ahead of its reporters, so they log ``pld/*`` too.

    Args:
        trainer: a ``transformers.Trainer`` whose model went through :func:`pldrop.apply_pld`.
        controller: the controller; ``None`` takes it from ``trainer.model``.
        **kwargs: passed to :class:`PLDCallback`.

    Returns:
        The callback (its ``released`` counter is a diagnostic).
    """
    ctl = controller if controller is not None else get_controller(trainer.model)
    if ctl is None:
        raise ValueError(f"{type(trainer.model).__name__} has no PLD controller; call pldrop.apply_pld first")
    cb = PLDCallback(ctl, **kwargs)
    trainer.callback_handler.callbacks.insert(0, cb)
    return cb
