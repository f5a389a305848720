"""Bad input to `pldrop finetune` / `pldrop evaluate`: exit code 2 and one line naming the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pldrop.cli import main

from .test_finetune import make_tiny_model, one_thread  # noqa: F401  (fixture; `tiny` and `data` come from conftest.py)


def _copy(src: Path, dst: Path, *names: str) -> Path:
    dst.mkdir(parents=True)
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


def fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``pldrop argv``; assert exit 2 and one stderr line holding every fragment."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pldrop {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    return lines[0]


def test_model_folder_problems(tiny, data, tmp_path, capsys):
    def ft(model):
        return ["finetune", "--model", str(model), "--task", "kw", "--data", str(data), "--out", str(tmp_path / "o"),
                "--no-progress"]

    fails(capsys, ft(tmp_path / "nope"), f"--model {tmp_path / 'nope'}: not found")
    fails(capsys, ft(tiny / "vocab.txt"), "is a file")
    (tmp_path / "empty").mkdir()
    fails(capsys, ft(tmp_path / "empty"), "no config.json")
    fails(capsys, ft(_copy(tiny, tmp_path / "noweights", "config.json", "vocab.txt")), "no weights")
    fails(capsys, ft(_copy(tiny, tmp_path / "notok", "config.json", "model.safetensors")), "no tokenizer")

    # an architecture without a sequence-classification head
    vit = _copy(tiny, tmp_path / "vit", "model.safetensors", "vocab.txt")
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(vit)
    fails(capsys, ft(vit), "model_type 'vit' has no sequence-classification head")

    # a tokenizer with more tokens than the model's vocabulary
    small = _copy(tiny, tmp_path / "small", "model.safetensors", "vocab.txt", "tokenizer.json",
                  "tokenizer_config.json")
    config = json.loads((tiny / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 10}))
    fails(capsys, ft(small), "67 tokens but the model's vocabulary only 10")

    # weights of another model under this config: the encoder would silently be random
    other = tmp_path / "other"
    make_tiny_model(other, arch="roberta-prelayernorm")
    shutil.copy(tiny / "config.json", other / "config.json")
    fails(capsys, ft(other), "encoder weights are missing")
    assert not (tmp_path / "o" / "results.json").exists()


def test_missing_model_is_refused_before_the_task_is_prepared(tmp_path, capsys, monkeypatch):
    import pldrop.tasks.registry as registry

    def prepare(*args, **kwargs):
        raise AssertionError("the task's data was prepared before --model was checked")

    monkeypatch.setattr(registry, "load_task", prepare)
    fails(capsys, ["finetune", "--model", str(tmp_path / "missing"), "--task", "trec6", "--out", str(tmp_path / "o"),
                   "--no-progress"], f"--model {tmp_path / 'missing'}: not found")
    assert not (tmp_path / "o").exists()


def test_data_and_flag_problems(tiny, data, tmp_path, capsys):
    base = ["finetune", "--model", str(tiny), "--out", str(tmp_path / "o"), "--no-progress"]
    kw = [*base, "--task", "kw", "--data", str(data)]

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    with open(bad / "dev.tsv", "a") as f:
        f.write("w1 w2\tmaybe\n")
    fails(capsys, [*base, "--task", "kw", "--data", str(bad)], f"{bad / 'dev.tsv'}:8: label 'maybe'")
    empty = tmp_path / "empty"
    shutil.copytree(data, empty)
    (empty / "train.tsv").write_text("text\tlabel\n")
    fails(capsys, [*base, "--task", "kw", "--data", str(empty)], "train.tsv:2: no examples")
    fails(capsys, [*base, "--task", "kw"], "unknown task 'kw' without data")
    fails(capsys, [*base, "--task", "trec6", "--data", str(data)], "offline recipe")
    fails(capsys, [*kw, "--text-columns", "a,b,c"], "--text-columns a,b,c")
    fails(capsys, [*kw, "--text-columns", "sentence"], "no column 'sentence'")
    fails(capsys, [*kw, "--lr", "0"], "--lr 0.0: expected a positive learning rate")
    fails(capsys, [*kw, "--epochs", "0"], "--epochs 0")
    fails(capsys, [*kw, "--warmup-ratio", "1.5"], "--warmup-ratio 1.5")
    fails(capsys, [*kw, "--device", "tpu:x"], "--device tpu:x")

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text("{}")
    fails(capsys, kw, "already holds results", "--overwrite")
    (tmp_path / "file").write_text("")
    fails(capsys, ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out",
                   str(tmp_path / "file")], "is a file, not a folder")

    with pytest.raises(SystemExit) as e:  # argparse: usage and exit 2
        main([*kw, "--regression", "--classification"])
    assert e.value.code == 2


def test_evaluate_problems(tiny, data, tmp_path, capsys):
    ev = ["evaluate", "--tasks", "kw", "--data", str(data), "--no-progress"]
    fails(capsys, [*ev, "--models", str(tiny), str(tmp_path / "nope"), "--out", str(tmp_path / "e")],
          f"--models {tmp_path / 'nope'}: no such folder")
    fails(capsys, ["evaluate", "--models", str(tiny), "--tasks", "trec6", "nosuchtask", "--out", str(tmp_path / "e")],
          "unknown task 'nosuchtask' without data")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "table.md").write_text("")
    fails(capsys, [*ev, "--models", str(tiny), "--out", str(tmp_path / "e")], "already exists", "--resume")
    fails(capsys, [*ev, "--models", str(tiny), "--out", str(tmp_path / "e"), "--resume", "--overwrite"],
          "exclude each other")


def test_empty_split_from_a_library_caller(tiny, data, tmp_path):
    from pldrop.errors import UserError
    from pldrop.tasks import load_task
    from pldrop.tasks.finetune import finetune

    task = load_task("kw", data)
    task.dev["dev"] = []
    with pytest.raises(UserError, match="task kw: the dev split has no examples"):
        finetune(tiny, "kw", tmp_path / "o", task_data=task)


def _score_task(folder: Path, scores: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"w{i} w{i + 1}\t{s}\n" for i, s in enumerate(scores))
    (folder / "train.tsv").write_text("text\tlabel\n" + rows)
    (folder / "dev.tsv").write_text("text\tlabel\n" + rows)
    return folder


# issue 23 item 9: each row a fine-tuning input that used to run and report nonsense
# (id, argv builder (tiny model, task data, tmp folder), fragments of the one-line error)
FT_ROWS = [
    ("nan in a score column",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "s", "--out", str(w / "o"), "--data",
                            str(_score_task(w / "nan", [f"{0.1 * i + 0.05:.2f}" for i in range(9)] + ["nan"]))],
     ["train.tsv:11: label 'nan' in 'label' is not a finite number"]),
    ("inf in a JSON-lines score column",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "s", "--out", str(w / "o"), "--data",
                            f"{_jsonl(w / 't.jsonl', [0.5, 1.5, 'Infinity'])},{_jsonl(w / 'd.jsonl', [0.5, 1.5])}"],
     ["t.jsonl:3: label inf", "not a finite number"]),
    ("all texts empty",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "e", "--out", str(w / "o"), "--data",
                            f"{_empty_texts(w / 'train.tsv')},{data / 'dev.tsv'}"],
     ["train.tsv:2: every text in 'text' is empty"]),
    ("--out is the model folder",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out", str(tiny)],
     ["is the model folder"]),
    ("--out inside the model folder",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data),
                            "--out", str(tiny / "ft")], ["is inside the model folder"]),
    ("a model listed twice",
     lambda tiny, data, w: ["evaluate", "--models", str(tiny), str(tiny) + "/", "--tasks", "kw", "--data", str(data),
                            "--out", str(w / "e")], ["is listed twice", "give each model once"]),
    ("evaluate --out is a model folder",
     lambda tiny, data, w: ["evaluate", "--models", str(tiny), "--tasks", "kw", "--data", str(data),
                            "--out", str(tiny), "--overwrite"], ["is the model folder"]),
    ("--threads 0",
     lambda tiny, data, w: ["finetune", "--model", str(tiny), "--task", "kw", "--data", str(data), "--out",
                            str(w / "o"), "--threads", "0"], ["--threads 0"]),
]


def _jsonl(path: Path, labels: list) -> str:
    path.write_text("".join(json.dumps({"text": f"w{i} w{i + 1}", "label": v}) + "\n" for i, v in enumerate(labels))
                    .replace('"Infinity"', "Infinity"))
    return str(path)


def _empty_texts(path: Path) -> str:
    path.write_text("text\tlabel\n" + "".join(f"\t{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    return str(path)


@pytest.mark.parametrize("build,fragments", [r[1:] for r in FT_ROWS], ids=[r[0] for r in FT_ROWS])
def test_finetune_bad_input_is_one_line_and_touches_nothing(tiny, data, tmp_path, capsys, build, fragments):
    before = sorted(p.relative_to(tiny) for p in tiny.rglob("*"))
    argv = [*build(tiny, data, tmp_path), "--no-progress"]
    fails(capsys, argv, *fragments)
    assert sorted(p.relative_to(tiny) for p in tiny.rglob("*")) == before  # nothing written into the model
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()
