"""Checkpoint files: the manifest covers state.json, older checkpoints load, killed saves are collected."""

import json
import os
import subprocess
import sys
from pathlib import Path

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


# --- a full disk (issue 23 item 8) -----------------------------------------------------------
# What the writers really raise when the disk fills (measured on a 200 KiB tmpfs, torch 2.13,
# safetensors 0.8): torch.save a RuntimeError, safetensors a SafetensorError -- neither an OSError.
TORCH_FULL = ["[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534", "basic_ios::clear: iostream error"]
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def _full_torch_save(message):
    real = torch.save

    def save(obj, f, *a, **kw):
        if str(f).endswith("optimizer.pt"):
            with open(f, "wb") as fh:  # a torn file, as a full disk leaves it
                fh.write(b"PK\x03\x04" + b"\0" * 1000)
            raise RuntimeError(message)
        return real(obj, f, *a, **kw)

    return save


def _full_safetensors(*a, **kw):
    from safetensors import SafetensorError

    path = a[1] if len(a) > 1 else kw["filename"]
    with open(path, "wb") as fh:
        fh.write(b"\0" * 1000)
    raise SafetensorError(SAFETENSORS_FULL)


@pytest.mark.parametrize("writer", ["torch:" + m for m in TORCH_FULL] + ["safetensors"])
def test_disk_full_during_save_is_an_oserror_and_leaves_no_temporary(tmp_path, monkeypatch, writer):
    import pldrop.train.checkpoint as ck

    model, opt = _model_opt()
    save_checkpoint(tmp_path, model, opt, {"step": 1})
    if writer == "safetensors":
        monkeypatch.setattr(ck, "save_file", _full_safetensors)
    else:
        monkeypatch.setattr(torch, "save", _full_torch_save(writer.split(":", 1)[1]))
    with pytest.raises(OSError) as e:
        save_checkpoint(tmp_path, model, opt, {"step": 2})
    assert e.value.strerror and "\n" not in str(e.value)
    if writer == "safetensors":
        assert e.value.strerror == "No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-0000001"]  # no temporary left
    assert latest_checkpoint(tmp_path).name == "step-0000001"
    assert load_checkpoint(tmp_path / "step-0000001", model, opt)["step"] == 1


CORPUS = str(Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt")
M = ["pretrain", "--corpus", CORPUS, "--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--no-progress",
     "data.vocab_size=400", "save_every=2"]


def _one_line_exit_2(capsys, argv, *fragments):
    from pldrop.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def _temporaries(folder):
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def test_disk_full_in_a_checkpoint_of_pretrain_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    from pldrop.cli import main

    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    real, calls = torch.save, []

    def second_save_fails(obj, f, *a, **kw):  # step 2 saves, step 4's optimizer state meets a full disk
        if str(f).endswith("optimizer.pt"):
            calls.append(f)
            if len(calls) == 2:
                return _full_torch_save(TORCH_FULL[0])(obj, f)
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", second_save_fails)
    _one_line_exit_2(capsys, [*M, "--out", str(out)], "cannot write a checkpoint", "step-0000002) is intact",
                     "--resume")
    assert not _temporaries(out)
    assert latest_checkpoint(out / "checkpoints").name == "step-0000002"
    monkeypatch.setattr(torch, "save", real)
    assert main([*M, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_disk_full_at_the_final_save_pretrained_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    import transformers.modeling_utils as mu

    from pldrop.cli import main

    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    monkeypatch.setattr(mu, "safe_save_file", _full_safetensors)
    _one_line_exit_2(capsys, [*M, "--out", str(out)], "cannot write the final model", "No space left on device",
                     "step-0000004) is intact", "--resume")
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()  # no torn weights
    assert not _temporaries(out)
    monkeypatch.undo()
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    assert main([*M, "--out", str(out), "--resume"]) == 0
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(out) is not None
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
