"""One table of bad inputs (issue 9): each row is a command line a user could type.

Every row must end with exit code 2, exactly one line on stderr that holds the expected words,
and nothing created, changed or removed in the user's folders. Add a row with every bug fixed.
Rows run ``pldrop.cli.main`` in-process; none reaches the training loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pldrop.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "corpus"
TINY = FIXTURES / "tiny.txt"


def _run_folder(path: Path, **extra: str) -> Path:
    """A finished-looking pldrop run folder."""
    from pldrop.train.rundir import mark_run_folder

    path.mkdir(parents=True)
    mark_run_folder(path, "pldrop pretrain")
    for name in ("config.yaml", "pldrop.json", "metrics.jsonl", "summary.json", "CREDITS.md"):
        (path / name).write_text("{}\n")
    for name, text in extra.items():
        (path / name).write_text(text)
    return path


def _model_json(w: Path, **kw) -> str:
    base = dict(model_type="roberta-prelayernorm", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                intermediate_size=64, max_position_embeddings=130, hidden_act="gelu")
    base.update(kw)
    (w / "model.json").write_text(json.dumps(base))
    return str(w / "model.json")


def _yaml(w: Path, text: str) -> str:
    (w / "c.yaml").write_text(text)
    return str(w / "c.yaml")


def _utf16(w: Path) -> str:
    (w / "wide.txt").write_bytes(TINY.read_text(encoding="utf-8").encode("utf-16"))
    return str(w / "wide.txt")


def _file(w: Path, name="f") -> str:
    (w / name).write_text("a user's file\n")
    return str(w / name)


def _symlink(w: Path) -> str:
    _run_folder(w / "real")
    (w / "link").symlink_to(w / "real")
    return str(w / "link")


def _corpus_folder_run(w: Path) -> str:
    d = _run_folder(w / "d")
    (d / "corpus.txt").write_text(TINY.read_text(encoding="utf-8"))
    return str(d)


P = ["pretrain", "--preset", "tiny", "--max-steps", "1", "--no-progress"]
C = ["compare", "--preset", "tiny", "--max-steps", "1", "--no-progress"]

# (id, argv builder taking the user's folder w, expected words in the one-line error)
ROWS = [
    # --out and --overwrite (item 1)
    ("out empty", lambda w: P + ["--corpus", str(TINY), "--out", ""], "current folder"),
    ("out dot", lambda w: P + ["--corpus", str(TINY), "--out", "."], "current folder"),
    ("out a file", lambda w: P + ["--corpus", str(TINY), "--out", _file(w)], "is a file"),
    ("out below a file", lambda w: P + ["--corpus", str(TINY), "--out", _file(w) + "/run"], "is a file"),
    ("out a symlink", lambda w: P + ["--corpus", str(TINY), "--out", _symlink(w), "--overwrite"], "symbolic link"),
    ("overwrite: thesis.tex in the run",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run", **{"thesis.tex": "x"})), "--overwrite"],
     "thesis.tex"),
    ("overwrite: a folder pldrop did not make",
     lambda w: P + ["--corpus", str(TINY), "--out", str(Path(_file(w / "mine" if (w / "mine").mkdir() is None
                                                                     else w, "n.md")).parent), "--overwrite"],
     "not a pldrop run folder"),
    ("overwrite: --corpus d --out d",
     lambda w: P + ["--corpus", _corpus_folder_run(w), "--out", str(w / "d"), "--overwrite"], "holds the run's input"),
    ("overwrite: the corpus file inside --out",
     lambda w: P + ["--corpus", _corpus_folder_run(w) + "/corpus.txt", "--out", str(w / "d"), "--overwrite"],
     "holds the run's input"),
    ("overwrite: the config file inside --out",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run", **{"config.yaml": "seed: 1\n"})),
                    "--config", str(w / "run" / "config.yaml"), "--overwrite"], "holds the run's input"),
    ("overwrite: a typo in --corpus leaves the old run",
     lambda w: P + ["--corpus", str(w / "typo.txt"), "--out", str(_run_folder(w / "prev")), "--overwrite"],
     "corpus path not found"),
    ("compare overwrite: a typo in --corpus leaves the old run",
     lambda w: C + ["--corpus", str(w / "typo.txt"), "--out", str(_run_folder(w / "prev")), "--overwrite"],
     "corpus path not found"),
    ("existing run without a flag", lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run"))],
     "--resume to continue it or --overwrite"),
    ("resume and overwrite",
     lambda w: P + ["--corpus", str(TINY), "--out", str(_run_folder(w / "run")), "--resume", "--overwrite"],
     "exclude each other"),
    # values (item 6)
    ("cache-dir a file", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--cache-dir", _file(w)],
     "is a file"),
    ("huge seed", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--seed", "99999999999999999999999"],
     "must be in [0, 2**63)"),
    ("negative seed", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--seed", "-1"], "seed=-1"),
    ("beta1 1.5", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.beta1=1.5"], "optim.beta1=1.5"),
    ("eps -1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.eps=-1"], "optim.eps=-1.0"),
    ("beta2 nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.beta2=nan"], "optim.beta2=nan"),
    ("lr nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "optim.lr=nan"], "optim.lr=nan"),
    ("theta_bar nan", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.theta_bar=nan"],
     "pld.theta_bar=nan"),
    ("threads -1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "--threads", "-1"], "threads=-1"),
    ("max-minutes inf", lambda w: ["pretrain", "--corpus", str(TINY), "--out", str(w / "r"), "--max-minutes", "inf"],
     "budget.max_minutes=inf"),
    ("config_file a list", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                          f"model.config_file={_yaml(w, '[1, 2]')}"], "holds a JSON list"),
    ("config_file heads", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                         f"model.config_file={_model_json(w, num_attention_heads=3)}"],
     "does not divide hidden_size"),
    ("config_file hidden_act", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                              f"model.config_file={_model_json(w, hidden_act='nope')}"],
     "hidden_act='nope' is not known"),
    ("config_file positions", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                             f"model.config_file={_model_json(w, max_position_embeddings=64)}"],
     "max_position_embeddings=64 is too small"),
    ("config section a scalar", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                               "--config", _yaml(w, "optim: 0\n")], "config section optim must be"),
    ("config lr a word", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"),
                                        "--config", _yaml(w, "optim:\n  lr: fast\n")], "must be a number"),
    ("depth schedule unknown", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=linear"],
     "pld.schedule='linear' is not a depth schedule"),
    ("cooldown 1", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.cooldown=1"],
     "pld.cooldown=1.0 is out of range"),
    ("compare cooldown 0", lambda w: C + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=cooldown",
                                         "pld.cooldown=0"], "pld.cooldown=0.0 is out of range"),
    ("deepspeed PLD block with another schedule",
     lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "pld.schedule=anneal", "--deepspeed",
                    _yaml(w, '{"progressive_layer_drop": {"enabled": true}}')], "is the pld schedule"),
    ("demo theta-bar 0", lambda w: ["demo", "--theta-bar", "0"], "--theta-bar 0.0"),
    ("demo theta-bar nan", lambda w: ["demo", "--theta-bar", "nan"], "--theta-bar nan"),
    # data (item 7)
    ("corpus an empty name", lambda w: P + ["--corpus", "", "--out", str(w / "r")], "empty corpus name"),
    ("seq_len absurd", lambda w: P + ["--corpus", str(TINY), "--out", str(w / "r"), "data.seq_len=1000000000"],
     "data.seq_len=1000000000"),
    ("corpus UTF-16", lambda w: P + ["--corpus", _utf16(w), "--out", str(w / "r")], "is UTF-16 text"),
]


@pytest.mark.parametrize("build,expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, monkeypatch, capsys, build, expected):
    world = tmp_path / "w"  # the user's folders (and the current directory)
    world.mkdir()
    (world / "keep.txt").write_text("the user's own file\n")
    monkeypatch.chdir(world)
    monkeypatch.setenv("PLDROP_CACHE", str(tmp_path / "cache"))
    argv = build(world)
    before = _snapshot(world)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert _snapshot(world) == before  # nothing created, changed or removed


def _snapshot(folder: Path) -> dict[str, object]:
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_file():
            out[key] = p.read_bytes()
        else:
            out[key] = "dir"
    return out


def test_read_only_out_parent(read_only_dir, capsys):
    assert main(P + ["--corpus", str(TINY), "--out", str(read_only_dir / "run")]) == 2
    assert "not writable" in capsys.readouterr().err


PROBE = """
import sys
from pldrop.cli import main
main(["demo", "--theta-bar", "0"])  # any command: the CLI sets the probe up at start
from pldrop.models import build_model
build_model("pld", 99, "tiny", seq_len=16).save_pretrained(sys.argv[1])
print("deepspeed imported:", "deepspeed" in sys.modules)
"""


@pytest.mark.slow  # a fresh interpreter imports transformers (5-20 s under load)
def test_deepspeed_is_not_imported_unless_asked_for(tmp_path):
    """accelerate's save_pretrained path imported DeepSpeed (and printed its accelerator warning) on every command."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed: nothing could import it")
    p = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "deepspeed imported: False" in p.stdout
    assert "Setting accelerator" not in p.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
