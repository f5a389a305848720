"""skip_dropped_buckets_hook: same parameters as plain DDP, with buckets of skipped blocks left out."""

import json

import pytest

from _launch import ROOT, dist_env, run, torchrun_cmd

pytestmark = pytest.mark.multiprocess


def test_hook_skips_buckets_and_changes_nothing(tmp_path):
    proc = run(torchrun_cmd(str(ROOT / "tests/distributed/hook_worker.py"), str(tmp_path), "12"),
               dist_env(tmp_path), timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:]
    res = json.loads((tmp_path / "hook_result.json").read_text())
    assert res["ranks_identical"]
    assert res["buckets_skipped"] > 0
    # zeros all-reduced or zeros kept: the same; kept buckets reduce identically
    assert res["max_abs_diff_plain_vs_hook"] == 0.0
