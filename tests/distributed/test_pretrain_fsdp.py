"""`torchrun -m pldrop pretrain --fsdp` with 2 CPU ranks: the same training as DDP, a loadable model,
an exact --resume."""

import json
import shutil

import pytest
import torch

from _launch import ROOT, dist_env, run, torchrun_cmd

pytestmark = pytest.mark.multiprocess


def pretrain(out, env, *extra):
    args = ["-m", "pldrop", "pretrain", "--corpus", str(ROOT / "tests/fixtures/corpus/tiny.txt"), "--out", str(out),
            "--preset", "tiny", "--batch-size", "4", "--max-steps", "6", "--save-every", "3", "--eval-every", "3",
            "--no-progress", "data.vocab_size=300", "optim.precision=fp32", *extra]
    proc = run(torchrun_cmd(*args), env, timeout=180)
    return proc


def test_fsdp_pretrain_matches_ddp_and_saves_full_weights(tmp_path):
    env = dist_env(tmp_path)
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    for out, extra in ((ddp, []), (fsdp, ["--fsdp"])):
        proc = pretrain(out, env, *extra)
        assert proc.returncode == 0, proc.stdout[-4000:]
    a = [json.loads(ln) for ln in (ddp / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(ln) for ln in (fsdp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["blocks_run"] for r in b] == [r["blocks_run"] for r in a]  # the same gates on every rank
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-4)
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], rel=1e-4)
    # the saved model holds the full (gathered) weights, equal to DDP's
    from safetensors.torch import load_file

    wa, wb = load_file(str(ddp / "model.safetensors")), load_file(str(fsdp / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    # its checkpoints hold the full weights and optimizer state: resumed from step 3, the same run
    half = tmp_path / "half"
    shutil.copytree(fsdp, half)
    shutil.rmtree(half / "checkpoints" / "step-0000006")
    (half / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step-0000003", "step": 3}))
    (half / "model.safetensors").unlink()
    (half / "summary.json").unlink()
    proc = pretrain(half, env, "--fsdp", "--resume")
    assert proc.returncode == 0, proc.stdout[-4000:]
    c = [json.loads(ln) for ln in (half / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in c] == [1, 2, 3, 4, 5, 6]
    for k in ("loss", "theta", "blocks_run"):
        assert [r[k] for r in c[3:]] == pytest.approx([r[k] for r in b[3:]], rel=1e-5), k
    assert c[-1]["val_loss"] == pytest.approx(b[-1]["val_loss"], rel=1e-5)
    wc = load_file(str(half / "model.safetensors"))
    for k in wb:
        torch.testing.assert_close(wc[k], wb[k], rtol=1e-5, atol=1e-6)


def test_fsdp_without_torchrun_is_one_line(tmp_path, capsys, monkeypatch):
    from pldrop.cli import main

    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    rc = main(["pretrain", "--fsdp", "--corpus", str(ROOT / "tests/fixtures/corpus/tiny.txt"), "--out",
               str(tmp_path / "r"), "--preset", "tiny", "--max-steps", "1", "--no-progress", "data.vocab_size=300"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "torchrun" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
