"""The ``pldrop`` command line: pretrain | compare | finetune | evaluate | shrink | evaluate-depth | bench | report | demo.

Each subcommand lives in its own module and registers itself with ``add_parser(subparsers)``
and a ``run(args)`` function. A :class:`~pldrop.errors.UserError` anywhere ends the command
with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

# subcommand -> module implementing add_parser(subparsers) and run(args)
COMMANDS = {
    "pretrain": "pldrop.train.cli",
    "compare": "pldrop.train.compare",
    "finetune": "pldrop.tasks.cli",
    "evaluate": "pldrop.tasks.cli_evaluate",
    "shrink": "pldrop.train.shrink_cmd",
    "evaluate-depth": "pldrop.reporting.depth_cmd",
    "bench": "pldrop.reporting.bench_cmd",
    "report": "pldrop.reporting.report_cmd",
    "demo": "pldrop.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pldrop",
        description=(
            "Progressive Layer Dropping (Zhang & He, NeurIPS 2020) for Hugging Face transformers: "
            "pretrain BERT-style encoders or Llama-style decoders with and without layer dropping (PLD "
            "and schedules that end at full depth) side by side, cut trained models to fewer blocks, "
            "fine-tune and evaluate them, and measure the speed-up."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pldrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real import error inside the module: surface it
                raise
            continue  # not built yet
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import UserError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .integrations import defer_deepspeed_probe

    defer_deepspeed_probe()  # DeepSpeed loads only for --deepspeed (accelerate would import it on every save)
    words = sys.argv[1:] if argv is None else argv
    if not any(w in ("-h", "--help", "--version") for w in words):
        # every command runs torch: import it before our signal handlers, whose exception raised inside
        # torch's C++ module initialisation would abort the interpreter ("terminate called ..."); a
        # signal during this import ends the process as before, with nothing written. --help needs none.
        import torch  # noqa: F401
    old = _early_signals()  # until a command installs its own handler: stop cleanly, nothing written yet
    command = "pldrop"
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command = f"pldrop {args.command}"
        # key=value overrides may come anywhere among the flags, not only after the last positional
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        with _library_bars(not getattr(args, "no_progress", False) and sys.stderr.isatty()):
            rc = args.run(args)
    except UserError as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except _EarlyStop as e:
        print(f"{command}: {e.args[0]}: stopped before anything was written", file=sys.stderr)
        return e.args[1]
    finally:
        _restore(old)
    return _end(int(rc or 0))


@contextlib.contextmanager
def _library_bars(show: bool):
    """transformers' own bars ("Loading weights", "Writing model shards") off in every command, pldrop
    draws one bar per long job itself; the hub's download bars too under --no-progress and when stderr
    is not a terminal. Restored after (tests call main() in one process)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_was, hub_was = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # (it turns the hub's off too)
    if show and hub_was:
        enable_progress_bars()
    try:
        yield
    finally:
        if hf_was:
            hf_logging.enable_progress_bar()
        (enable_progress_bars if hub_was else disable_progress_bars)()


def _end(rc: int) -> int:
    """Under torchrun, leave the process group together and skip interpreter finalization, where
    gloo threads kept alive by DDP can abort (see pldrop.train.distributed.exit_after_teardown)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and rc == 0:
        from .train.distributed import exit_after_teardown

        exit_after_teardown(rc)  # the teardown is a no-op if the command already left the group
    return rc


class _EarlyStop(BaseException):
    pass


def _early_signals() -> dict:
    import signal

    def stop(signum, frame):
        raise _EarlyStop("SIGTERM" if signum == signal.SIGTERM else "SIGINT", 128 + signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (e.g. called from a library)
            pass
    return old


def _restore(old: dict) -> None:
    import signal

    for sig, handler in old.items():
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
