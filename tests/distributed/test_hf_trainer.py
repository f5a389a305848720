"""PLDCallback under transformers.Trainer: θ follows the schedule, gates drawn, skipped blocks untouched."""

import json
import math

import pytest
import torch

import pldrop
from _launch import ROOT, dist_env, run, torchrun_cmd
from _tiny import global_batch, tiny_model

transformers = pytest.importorskip("transformers")
from pldrop.integrations import PLDCallback, add_pld_callback  # noqa: E402

THETA_BAR, GAMMA, STEPS = 0.5, 0.3, 8


def rows(n: int = 32):
    b = global_batch(0, size=n)
    return [{k: v[i] for k, v in b.items()} for i in range(n)]


def make_trainer(tmp_path, model, callbacks=None, **kw):
    settings = dict(output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=4,
                    learning_rate=1e-3, weight_decay=0.1, logging_steps=1, save_strategy="no", report_to=[],
                    use_cpu=True, seed=0, disable_tqdm=True)
    args = transformers.TrainingArguments(**{**settings, **kw})
    return transformers.Trainer(model=model, args=args, train_dataset=rows(), callbacks=callbacks)


def test_trainer_callback_follows_schedule(tmp_path):
    model = tiny_model()
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=1)
    seen, untouched = [], []  # (global_step, gates) of every optimizer step; skipped blocks unchanged?

    class Spy(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            seen.append((state.global_step, list(ctl.last_kept)))
            self.before = {i: [p.detach().clone() for p in ctl.blocks[i].parameters()]
                           for i, k in enumerate(ctl.last_kept) if not k}

        def on_optimizer_step(self, args, state, control, **kw):
            for i, ps in self.before.items():
                untouched.append(all(torch.equal(a, b) for a, b in zip(ps, ctl.blocks[i].parameters())))

    trainer = make_trainer(tmp_path, model, callbacks=[PLDCallback(), Spy()])
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == list(range(1, STEPS + 1))
    for h in logs:  # the log at step s describes optimizer step s - 1
        assert h["pld/theta"] == pytest.approx(pldrop.theta(h["step"] - 1, THETA_BAR, GAMMA), abs=1e-12)
        assert math.isfinite(h["loss"])
        assert 0 <= h["pld/kept"] <= 4
    thetas = [h["pld/theta"] for h in logs]
    assert thetas[0] == 1.0 and all(a > b for a, b in zip(thetas, thetas[1:]))
    # gates are the controller's counter-based draws for (seed, step, micro-step 0)
    from pldrop.controller import draw_gates

    for step, kept in seen:
        ctl.step(step)
        assert kept == draw_gates(ctl.keep_probs, 1, step, 0)
    # gamma is large enough that blocks are dropped; AdamW (weight decay 0.1, momentum from earlier
    # steps) leaves a skipped block bit-identical through the optimizer step
    assert len(untouched) >= 2 and all(untouched)


def test_trainer_gives_a_depth_schedule_the_runs_length(tmp_path):
    model = tiny_model()
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, seed=1, schedule="anneal")  # no total_steps
    trainer = make_trainer(tmp_path, model, callbacks=[PLDCallback()])
    trainer.train()
    assert ctl.total_steps == STEPS
    thetas = [h["pld/theta"] for h in trainer.state.log_history if "loss" in h]
    assert thetas == pytest.approx([pldrop.theta_at_step("anneal", s, STEPS, THETA_BAR) for s in range(STEPS)])
    assert thetas[-1] == 1.0


def test_add_pld_callback_reaches_reporters(tmp_path):
    """Reporters run before callbacks given in callbacks=; add_pld_callback puts PLD first."""
    model = tiny_model(layers=2)
    pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=1)
    got = []

    class Reporter(transformers.TrainerCallback):  # stands for TensorBoard / W&B
        def on_log(self, args, state, control, logs=None, **kw):
            got.append(dict(logs))

    trainer = make_trainer(tmp_path, model, callbacks=[Reporter()], max_steps=3)
    trainer.callback_handler.callbacks.insert(1, trainer.callback_handler.pop_callback(Reporter))
    add_pld_callback(trainer)
    trainer.train()
    train_logs = [g for g in got if "loss" in g]
    assert len(train_logs) == 3 and all("pld/theta" in g for g in train_logs)


def test_callback_without_pld_model_says_so(tmp_path):
    trainer = make_trainer(tmp_path, tiny_model(layers=2), callbacks=[PLDCallback()], max_steps=1)
    with pytest.raises(ValueError, match="apply_pld"):
        trainer.train()


@pytest.mark.parametrize("with_callback", [False, True])
def test_trainer_without_the_callback_is_warned_once(tmp_path, with_callback):
    """A Trainer never steps the controller by itself: without the callback θ stays 1 (nothing is
    dropped), which PLDNotSteppedWarning says once; with it, gradient accumulation up to the
    threshold stays quiet."""
    import warnings

    model = tiny_model(layers=2)
    ctl = pldrop.apply_pld(model, theta_bar=THETA_BAR, gamma=GAMMA, seed=1)
    ctl.warn_after_forwards = 4
    trainer = make_trainer(tmp_path, model, max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=4)
    if with_callback:
        add_pld_callback(trainer)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        trainer.train()
    said = [str(w.message) for w in got if issubclass(w.category, pldrop.PLDNotSteppedWarning)]
    if with_callback:
        assert said == [] and ctl.global_step == 3 and ctl.theta < 1
    else:
        assert len(said) == 1 and "add_pld_callback(trainer)" in said[0] and ctl.theta == 1.0


def test_check_training_args_refuses_ddp_without_unused():
    from pldrop.integrations import check_training_args

    class Args:
        world_size, deepspeed, gradient_checkpointing, activation_checkpointing = 2, None, False, False
        ddp_find_unused_parameters = False

    with pytest.raises(ValueError, match="ddp_find_unused_parameters=True"):
        check_training_args(Args())
    Args.ddp_find_unused_parameters = None  # Trainer's default turns it on for a PreTrainedModel ...
    check_training_args(Args())
    Args.gradient_checkpointing = True  # ... but off with gradient checkpointing
    with pytest.raises(ValueError, match="gradient checkpointing"):
        check_training_args(Args())


@pytest.mark.multiprocess
def test_trainer_two_ranks_ddp(tmp_path):
    """torchrun, 2 CPU ranks: Trainer wraps DDP itself; gates and parameters agree on both ranks."""
    proc = run(torchrun_cmd(str(ROOT / "tests/distributed/trainer_worker.py"), str(tmp_path)), dist_env(tmp_path),
               timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:]
    res = json.loads((tmp_path / "trainer_result.json").read_text())
    assert res["world"] == 2 and res["wrapped"] == "DistributedDataParallel"
    assert res["gates_equal"] and res["params_equal"]
    assert any(not all(g) for g in res["gates"]) and res["untouched"] and all(res["untouched"])
    logs = [h for h in res["log_history"] if "loss" in h]
    assert [h["pld/theta"] for h in logs] == pytest.approx([pldrop.theta(s, THETA_BAR, GAMMA) for s in range(8)])
    assert all(math.isfinite(h["loss"]) for h in logs)
