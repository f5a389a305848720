"""Several pretraining runs in one process, advanced one optimizer step at a time.

Each turn steps the run that has used the least training time so far, so with a time budget every
run gets the same training time (a run with cheaper steps, such as PLD, takes more of them), and
load on the machine that comes and goes hits every run alike. The runs share nothing but the
process: each has its own model, optimizer, data order, PLD gates and torch RNG stream
(:meth:`PretrainRun.own_rng`), so the order of turns does not change any run's numbers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

from .distributed import any_rank
from .run import Diverged, PretrainRun


def next_run(train_time: Mapping[str, float], done: Mapping[str, bool]) -> str | None:
    """The run to step next: the least training time among those not done (ties: the first listed).

    >>> next_run({"a": 2.0, "b": 1.0, "c": 1.0}, {"a": False, "b": False, "c": False})
    'b'
    >>> next_run({"a": 2.0, "b": 1.0}, {"a": False, "b": True})
    'a'
    >>> next_run({"a": 2.0}, {"a": True}) is None
    True
    """
    pending = [name for name in train_time if not done[name]]
    return min(pending, key=lambda n: train_time[n]) if pending else None


def train_lockstep(runs: Mapping[str, PretrainRun], should_stop: Callable[[], bool] = lambda: False,
                   on_turn: Callable[[str, dict], None] | None = None) -> list[str]:
    """Step ``runs`` (already set up) in lockstep until every budget is spent; returns the order of turns.

    Args:
        runs: name -> run, each after :meth:`PretrainRun.setup`.
        should_stop: checked after every turn (e.g. a signal arrived); the caller then saves.
        on_turn: called with (name, record) after each turn (progress display).
    """
    order = []
    for r in runs.values():  # without eval_every, a time budget's validation interval is chosen for all arms
        r.eval_group = list(runs.values())
    while True:
        name = next_run({n: r.train_time for n, r in runs.items()}, {n: r.done for n, r in runs.items()})
        if name is None:
            return order
        try:
            record = runs[name].step()
        except Diverged as e:  # this run stops (its last good checkpoint is kept); the others go on
            runs[name].diverged = str(e)
            record = {"diverged": str(e)}
        order.append(name)
        _test_kill_point(runs)
        if on_turn is not None:
            on_turn(name, record)
        first = next(iter(runs.values()))
        if any_rank(should_stop(), first.world, first.device):
            return order


KILL_AT_STEP = "PLDROP_TEST_SIGKILL_AT_STEP"  # test-only: kill -9 once every run has reached this step


def _test_kill_point(runs: Mapping[str, PretrainRun]) -> None:
    """A kill at a known point for the resume tests (no race with a poll): with the environment variable
    ``PLDROP_TEST_SIGKILL_AT_STEP=N`` set, the process sends itself SIGKILL after the turn that brings
    the last run to step N. Unset (always, outside tests) it costs one dictionary look-up per turn."""
    at = os.environ.get(KILL_AT_STEP)
    if at and all(r.step_count >= int(at) for r in runs.values()):
        os.kill(os.getpid(), signal.SIGKILL)
