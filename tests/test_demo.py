"""`pldrop demo` stays the short run its --help promises."""

import argparse
import re

import torch

from pldrop import demo
from pldrop.cli import build_parser, main


def _demo_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["demo"]


def test_help_states_the_defaults_and_the_expected_time():
    p = _demo_parser()
    text = p.format_help().replace("\n", " ")
    text = re.sub(r"\s+", " ", text)
    args = p.parse_args([])
    d = demo.DEFAULTS
    assert (args.steps, args.preset, args.batch_size, args.seq_len, args.threads) == (
        d["steps"], d["preset"], d["batch_size"], d["seq_len"], d["threads"])
    assert f"{d['steps']} optimizer steps per arm" in text
    assert f"batch {d['batch_size']} x {d['seq_len']} tokens" in text
    assert demo.EXPECTED in text
    for flag in ("--batch-size", "--seq-len", "--seed", "--threads"):
        assert p._option_string_actions[flag].help, flag
    # the stated time was measured at this much work per arm: raising it means measuring again
    assert d["steps"] <= 50 and d["steps"] * d["batch_size"] * d["seq_len"] <= 40 * 8 * 64 and d["threads"] == 1


def test_demo_trains_exactly_the_stated_steps(capsys):
    threads = torch.get_num_threads()
    assert main(["demo", "--preset", "tiny"]) == 0  # the default step count, on the smallest model
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\s*\d+\s+[01]\.\d{3}\s", line)]
    assert [int(r.split()[0]) for r in rows] == list(range(demo.DEFAULTS["steps"]))
    assert f"over the last {demo.DEFAULTS['steps'] - demo.DEFAULTS['steps'] // 2} steps" in out
    assert torch.get_num_threads() == threads  # the demo's one thread does not leak into the caller
