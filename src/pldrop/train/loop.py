"""The pretraining loop: one :class:`~pldrop.train.run.PretrainRun`, stepped until its budget is spent.

    check --out and every input -> signal handler -> run.setup() -> while not done: run.step() -> run.finish()

Nothing is written before every input was checked and the data prepared; ``--overwrite`` writes
the new run beside the old one and swaps it in at the end, so a failed or interrupted run leaves
the old folder as it was. SIGTERM / SIGINT at any moment leave a folder that ``--resume`` accepts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import TrainConfig
from .distributed import any_rank, dist_teardown
from .run import Interrupted, PretrainRun, evaluate  # noqa: F401 - evaluate: public here since 0.1

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag checked between steps.

    While ``immediate`` is true (nothing written yet) a signal stops at once; afterwards the
    current step finishes and a checkpoint is written. A second Ctrl-C always stops at once.
    """

    def __init__(self, immediate: bool = True):
        self.signal: int | None = None
        self.immediate = immediate
        self._old = {}
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        # A signal that lands in a callback Python cannot raise from (an import lock's weakref
        # callback, a __del__) would print "Exception ignored ... Traceback": the flag holds it and
        # the next check stops the run, so ours is dropped there, silently.
        self._old_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def _unraisable(self, info) -> None:
        if not isinstance(info.exc_value, Interrupted):
            self._old_hook(info)

    @property
    def name(self) -> str:
        return "SIGTERM" if self.signal == signal.SIGTERM else "SIGINT"

    def _handle(self, signum, frame):
        again = self.signal is not None
        self.signal = signum
        if self.immediate or again:
            raise Interrupted(self.name, "stopped before training started; nothing was written to the run folder"
                              if self.immediate else "stopped at once (second signal)")

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._old_hook


def input_paths(cfg: TrainConfig) -> list[Path]:
    """Local files and folders a run reads (corpus, tokenizer, model and DeepSpeed configs, the cache):
    a new run's --out must not hold them."""
    from ..data.corpora import local_paths

    paths = list(local_paths(cfg.data.corpus))
    for p in (cfg.data.tokenizer, cfg.model.config_file, cfg.deepspeed, cfg.data.cache_dir):
        if p:
            paths.append(Path(p))
    return paths


def pretrain(cfg: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
             progress: bool | None = None, data=None, allow_data_change: bool = False,
             config_file: str | Path | None = None) -> dict[str, Any]:
    """Pretrain one arm; returns a summary (also written to ``<out>/summary.json``).

    A ``resume`` of a run that already spent ``cfg.budget`` trains nothing and writes nothing: it
    returns the saved summary with ``"nothing_to_do": True``.

    Args:
        cfg: the resolved configuration.
        out: the run folder.
        resume: continue from the run folder's latest checkpoint.
        overwrite: replace an existing pldrop run folder (only if it holds nothing pldrop did not write).
        progress: show a progress bar (None: when stderr is a terminal).
        data: already prepared data.
        allow_data_change: on resume, accept a changed corpus.
        config_file: the YAML file the config came from (checked not to live inside ``out``).
    """
    from .rundir import RunLock, check_out, resume_staged, staged, staging_target

    out = staging_target(Path(out)) if resume else Path(out)  # --resume --out .r.pldrop-new-PID: the run r
    stop = StopSignal(immediate=True)
    run = None
    stage = None
    try:
        inputs = input_paths(cfg) + ([Path(config_file)] if config_file else [])
        check_out(out, resume=resume, overwrite=overwrite, inputs=inputs)
        main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes: it alone locks and stages
        if resume:
            _no_staged_resume_under_torchrun(out)
        with contextlib.ExitStack() as locks:
            # two processes must not write one folder: an existing one is locked now (resume,
            # overwrite), a new one is created under its lock right before its first file
            if main and (resume or overwrite) and out.is_dir():
                locks.enter_context(RunLock(out))
            if resume and main:  # an interrupted --overwrite run of out continues, and replaces out at the end
                stage = resume_staged(out)
            if overwrite and out.exists() and main:
                stage = staged(out)
            work = stage.path if stage is not None else out
            run = PretrainRun(cfg, work, resume=resume, progress=progress, allow_data_change=allow_data_change)
            run.prepare_data(data)
            run.build_model()
            run.build_optimizer()
            if main and not resume:
                locks.enter_context(RunLock(work, create=True))
            stop.immediate = False  # from here on files are written: finish the step, then stop
            finished = run.spent_before()
            if finished is not None:  # --resume with the budget spent: nothing trained, nothing written
                run.check_resumable()
                if run.main:
                    print(f"pldrop: {str(out)!r} is already at step {finished['steps']}, at or past the budget; "
                          "nothing to do (the run folder is unchanged)", file=sys.stderr)
                summary = {**finished, "nothing_to_do": True} if run.main else {}
            else:
                run.start_or_resume()
                if stop.signal is not None:
                    raise run.interrupt(stop.name)
                while not run.done:
                    run.step()
                    if any_rank(stop.signal is not None, run.world, run.device):
                        raise run.interrupt(stop.name)
                summary = run.finish()
            if stage is not None and run.main:
                stage.commit()
                stage = None
        dist_teardown()  # every rank leaves the group together (see pldrop.train.distributed)
        return summary
    except Interrupted as e:
        if stage is not None:
            e.args = (staged_interrupt_message(e, stage, out, f"step {run.step_count if run is not None else 0}"),)
            stage.abort()  # keeps a staged run with a checkpoint: --resume --out out continues it
            stage = None
        raise
    finally:
        stop.restore()
        if run is not None:
            run.close()
        if stage is not None:  # a failure: the old folder stays as it was
            stage.abort()


def staged_interrupt_message(e: Interrupted, stage, out: Path, where: str, what: str = "run") -> str:
    """What an interrupted ``--overwrite`` (or continued one) left, and the command that goes on."""
    from .rundir import has_checkpoint

    old = f"the old {what} in {str(out)!r} is untouched" if out.exists() else f"{str(out)!r} does not exist yet"
    if not has_checkpoint(stage.path):
        return f"{e.name}: stopped before the first checkpoint; {old} and nothing of the new {what} was kept"
    return (f"{e.name}: stopped at {where}: checkpoint saved; {old}, the new {what} waits in "
            f"{str(stage.path)!r}: continue it with --resume --out {out} (it replaces {str(out)!r} when it "
            "finishes), or remove that folder to drop it")


def _no_staged_resume_under_torchrun(out: Path) -> None:
    from .rundir import pending_run

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and pending_run(out, held_too=True) is not None:
        raise UserError(f"--resume of the interrupted --overwrite run of {str(out)!r} ({pending_run(out, True)}) "
                        "under torchrun is not supported; continue it in one process, or rename that folder to a "
                        "name of its own and --resume it under torchrun")


def report_interrupt(command: str, e: Interrupted) -> int:
    print(f"pldrop {command}: {e}", file=sys.stderr)
    return e.exit_code


__all__ = ["pretrain", "evaluate", "StopSignal", "input_paths", "report_interrupt", "UserError"]
