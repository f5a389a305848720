"""Checkpoint files: the manifest covers state.json, older checkpoints load, killed saves are collected."""

import json
import os
import subprocess
import sys

import pytest
import torch

from pldrop.errors import UserError
from pldrop.train.checkpoint import MANIFEST, latest_checkpoint, load_checkpoint, save_checkpoint


def _model_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_and_manifest_covers_state(tmp_path):
    model, opt = _model_opt()
    ck = save_checkpoint(tmp_path, model, opt, {"step": 5, "samples": 40})
    sums = json.loads((ck / MANIFEST).read_text())["sha256"]
    assert set(sums) == {"model.safetensors", "optimizer.pt", "rng.pt", "state.json"}
    fresh, fresh_opt = torch.nn.Linear(4, 3), None
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state = load_checkpoint(ck, fresh, fresh_opt)
    assert state["step"] == 5 and torch.equal(fresh.weight, model.weight)
    # an edit of state.json (e.g. the step) is now refused
    text = (ck / "state.json").read_text().replace('"step": 5', '"step": 500')
    (ck / "state.json").write_text(text)
    with pytest.raises(UserError, match="state.json is missing, truncated or modified"):
        load_checkpoint(ck, fresh, fresh_opt)


def test_checkpoint_without_manifest_is_accepted_with_its_file_hashes(tmp_path):
    """Checkpoints of pldrop before the manifest: accepted, their tensors still checked."""
    model, opt = _model_opt()
    ck = save_checkpoint(tmp_path, model, opt, {"step": 5})
    (ck / MANIFEST).unlink()
    assert load_checkpoint(ck, model, opt)["step"] == 5
    with open(ck / "optimizer.pt", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match="optimizer.pt is missing, truncated or modified"):
        load_checkpoint(ck, model, opt)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"sha256": {}}'])
def test_damaged_manifest_is_one_line(tmp_path, content):
    model, opt = _model_opt()
    ck = save_checkpoint(tmp_path, model, opt, {"step": 1})
    (ck / MANIFEST).write_text(content)
    with pytest.raises(UserError, match="damaged") as e:
        load_checkpoint(ck, model, opt)
    assert "\n" not in str(e.value)


def test_next_save_collects_temporaries_of_killed_saves(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / f".step-0000004.tmp-{p.pid}"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / f".latest.json.tmp-{p.pid}").write_text("{")
    live = tmp_path / f".step-0000003.tmp-{os.getppid()}"
    live.mkdir()
    model, opt = _model_opt()
    save_checkpoint(tmp_path, model, opt, {"step": 6})
    assert not stale.exists() and not (tmp_path / f".latest.json.tmp-{p.pid}").exists() and live.exists()
    assert latest_checkpoint(tmp_path).name == "step-0000006"


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"checkpoint": 5}', b'{"checkpoint": ".."}',
                                     b'{"checkpoint": "../../etc"}', b"\xff\xfe\x00", b'{"checkpoint": "step-9"}'])
def test_damaged_latest_json_is_one_line(tmp_path, content):
    model, opt = _model_opt()
    save_checkpoint(tmp_path, model, opt, {"step": 1})
    (tmp_path / "latest.json").write_bytes(content)
    with pytest.raises(UserError) as e:
        latest_checkpoint(tmp_path)
    assert "latest.json" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"[1]", b"\xff\xfe", b'{"step": 1}'])
def test_damaged_state_json_of_an_old_checkpoint_is_one_line(tmp_path, content):
    model, opt = _model_opt()
    ck = save_checkpoint(tmp_path, model, opt, {"step": 1})
    (ck / MANIFEST).unlink()
    (ck / "state.json").write_bytes(content)
    with pytest.raises(UserError, match="state.json unreadable") as e:
        load_checkpoint(ck, model, opt)
    assert "\n" not in str(e.value)
