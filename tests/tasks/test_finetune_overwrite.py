"""`pldrop finetune --overwrite` (issue 9): every input is checked before anything is deleted, a
failed run leaves the old results intact, and only what pldrop wrote is ever deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pldrop.cli import main

from .test_finetune import one_thread  # noqa: F401  (fixture; `tiny` and `data` come from conftest.py)

FAST = ["--lr", "2e-3", "--batch-size", "16", "--warmup-ratio", "0", "--max-steps", "2", "--no-progress"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_exit_2(capsys, argv: list[str], *fragments: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pldrop finetune: error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err)


@pytest.fixture
def previous(tiny, data, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A finished run (two seeds, saved models) beside a file of the user's."""
    out = tmp_path / "ft"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    assert main(["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out", str(out),
                 "--seeds", "1", "2", "--save-model", *FAST]) == 0
    return out, snapshot(out)


def test_bad_inputs_with_overwrite_leave_the_old_run_intact(tiny, data, previous, tmp_path, capsys):
    out, before = previous
    ft = ["finetune", "--task", "kw", "--out", str(out), "--overwrite", *FAST]
    one_line_exit_2(capsys, [*ft, "--model", str(tiny), "--data", str(tmp_path / "typo")], "typo")
    assert snapshot(out) == before
    one_line_exit_2(capsys, [*ft, "--model", str(tmp_path / "nomodel"), "--data", str(data)], "not found")
    assert snapshot(out) == before

    # a corrupt model.safetensors: one line, exit 2, and nothing deleted
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny, bad)
    raw = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    one_line_exit_2(capsys, [*ft, "--model", str(bad), "--data", str(data)], "cannot load its weights")
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    one_line_exit_2(capsys, [*ft, "--model", str(bad), "--data", str(data)], "cannot load its weights")
    assert snapshot(out) == before

    # a run that fails while training (the loss diverges) leaves the old run and no staging folder
    one_line_exit_2(capsys, [*ft, "--model", str(tiny), "--data", str(data), "--lr", "1e30", "--clip-grad", "0"],
                    "the loss became")
    assert snapshot(out) == before and not list(out.glob(".finetune-tmp-*"))


def test_corrupt_weights_without_overwrite_create_nothing(tiny, data, tmp_path, capsys):
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny, bad)
    (bad / "model.safetensors").write_bytes(b"{}")
    out = tmp_path / "new"
    one_line_exit_2(capsys, ["finetune", "--model", str(bad), "--task", "kw", "--data", str(data), "--out", str(out),
                             *FAST], f"--model {bad}: cannot load its weights")
    assert not out.exists()


def test_overwrite_replaces_exactly_what_the_old_run_wrote(tiny, data, previous):
    out, before = previous
    assert {"model_seed1/model.safetensors", "predictions_dev_seed2.tsv", "thesis.tex"} <= set(before)
    assert main(["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out", str(out),
                 "--overwrite", *FAST]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["predictions_dev.tsv", "results.json", "thesis.tex"]
    assert (out / "thesis.tex").read_text() == "mine"
    assert json.loads((out / "results.json").read_text())["files"] == ["predictions_dev.tsv", "results.json"]


def test_entries_pldrop_did_not_write_are_never_deleted(tiny, data, previous, capsys):
    out, _ = previous
    argv = ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out", str(out), *FAST]
    one_line_exit_2(capsys, argv, "already holds results", "--overwrite")

    # a folder of the user's named like pldrop's output, which the old results.json does not list
    (out / "model").mkdir()
    (out / "model" / "weights.bin").write_text("the user's")
    (out / "predictions_old.tsv").write_text("the user's too")
    before = snapshot(out)
    one_line_exit_2(capsys, [*argv, "--overwrite"], "holds model", "deletes only what pldrop wrote")
    assert snapshot(out) == before
    (out / "model" / "weights.bin").unlink()
    (out / "model").rmdir()
    one_line_exit_2(capsys, [*argv, "--overwrite"], "holds predictions_old.tsv")
    assert snapshot(out) == {k: v for k, v in before.items() if not k.startswith("model/")}

    # a results.json that lists paths outside its folder, or files not named as pldrop names its
    # output, deletes none of them
    (out / "predictions_old.tsv").unlink()
    results = json.loads((out / "results.json").read_text())
    results["files"] += ["../victim.txt", "thesis.tex/..", "/etc/passwd", "thesis.tex"]
    (out / "results.json").write_text(json.dumps(results))
    victim = out.parent / "victim.txt"
    victim.write_text("keep")
    assert main([*argv, "--overwrite"]) == 0
    assert victim.read_text() == "keep" and (out / "thesis.tex").read_text() == "mine"


def test_empty_out_is_refused(tiny, data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text("{}")
    one_line_exit_2(capsys, ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out", "",
                             "--overwrite", *FAST], "--out '': expected a folder name")
    assert (tmp_path / "results.json").read_text() == "{}"
    capsys.readouterr()
    assert main(["evaluate", "--models", str(tiny), "--tasks", "kw", "--data", str(data), "--out", " ",
                 "--overwrite", *FAST]) == 2
    assert "--out ' ': expected a folder name" in capsys.readouterr().err
