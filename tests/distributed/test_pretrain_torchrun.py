"""`torchrun -m pldrop pretrain` with 2 CPU ranks: finishes, rank 0 alone writes, --resume continues."""

import json
import shutil

import pytest
from _launch import ROOT, dist_env, run, torchrun_cmd

from pldrop.train.rundir import foreign_files

pytestmark = pytest.mark.multiprocess

EXPECTED = {".pldrop-run", ".pldrop-files.jsonl", "CREDITS.md", "checkpoints", "config.json", "config.yaml",
            "metrics.jsonl", "model.safetensors", "pldrop.json", "summary.json", "tb", "tokenizer.json", "tokenizer_config.json"}


def pretrain(out, env, *extra):
    args = ["-m", "pldrop", "pretrain", "--corpus", str(ROOT / "tests/fixtures/corpus/tiny.txt"), "--out", str(out),
            "--preset", "tiny", "--batch-size", "4", "--save-every", "3", "--eval-every", "3", "--no-progress",
            "data.vocab_size=300", *extra]
    proc = run(torchrun_cmd(*args), env, timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:]


def steps_logged(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_two_ranks_and_resume(tmp_path):
    env = dist_env(tmp_path)
    full = tmp_path / "full"
    pretrain(full, env, "--max-steps", "6")
    assert {p.name for p in full.iterdir()} == EXPECTED
    assert foreign_files(full) == []  # every file the ranks wrote is recorded: --overwrite may replace the run
    assert len(list((full / "tb").iterdir())) == 1  # one TensorBoard writer: rank 0's
    recs = steps_logged(full)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]  # one line per step, not one per rank
    assert [r["samples"] for r in recs] == [8 * s for s in range(1, 7)]  # global batch = 4 x 2 ranks
    assert json.loads((full / "summary.json").read_text())["steps"] == 6
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["latest.json", "step-0000003", "step-0000006"]

    # resume from step 3 under torchrun: the same model as the unbroken run
    half = tmp_path / "half"
    shutil.copytree(full, half)
    shutil.rmtree(half / "checkpoints" / "step-0000006")
    (half / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step-0000003", "step": 3}))
    (half / "model.safetensors").unlink()
    (half / "summary.json").unlink()
    pretrain(half, env, "--resume", "--max-steps", "6")
    assert [r["step"] for r in steps_logged(half)] == [1, 2, 3, 4, 5, 6]
    assert len(list((half / "tb").iterdir())) == 2  # the copied one and rank 0's of the resumed run
    a, b = steps_logged(full), steps_logged(half)
    for k in ("loss", "theta", "blocks_run"):
        assert [r[k] for r in b[3:]] == pytest.approx([r[k] for r in a[3:]], rel=1e-5), k
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], rel=1e-5)
    assert (half / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
