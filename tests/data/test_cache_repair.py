"""Damaged cache entries are detected when opened and rebuilt (one line on stderr), never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from pldrop.data import dataset as ds_mod
from pldrop.data import prepare_data

SEQ = 32


def _prepare(corpus, cache):
    return prepare_data([str(corpus)], seq_len=SEQ, vocab_size=600, val_fraction=0.1, seed=0, cache_dir=cache,
                        progress=False)


@pytest.fixture
def built(tmp_path, tiny_corpus):
    cache = tmp_path / "cache"
    first = _prepare(tiny_corpus, cache)
    tok_dir = next((cache / "tokenizers").iterdir())
    return cache, first, tok_dir


def _rows(p):
    return [p.train.tokens(i).tolist() for i in range(len(p.train))], [p.valid.tokens(i).tolist() for i in range(len(p.valid))]


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)


DAMAGE = [
    ("tokenizer.json removed", "tok", lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    ("tokenizer.json emptied", "tok", lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer"),
    ("tokenizer vocabulary edited", "tok",
     lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"the"', '"thx"', 1)),
     "modified"),
    ("train.bin truncated", "tokens", lambda d: _truncate(d / "train.bin"), "train.bin has"),
    ("valid.bin removed", "tokens", lambda d: (d / "valid.bin").unlink(), "valid.bin is missing"),
    ("meta.json not JSON", "tokens", lambda d: (d / "meta.json").write_text("{\"splits\": "), "meta.json"),
    ("meta.json counts edited", "tokens",
     lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"n_seqs": ', '"n_seqs": 1', 1)),
     "meta.json"),
    ("meta.json removed", "tokens", lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
]


@pytest.mark.parametrize("where,damage,expected", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_entry_is_rebuilt_with_a_notice(built, tiny_corpus, capsys, where, damage, expected):
    cache, first, tok_dir = built
    capsys.readouterr()
    damage(tok_dir if where == "tok" else first.folder)
    again = _prepare(tiny_corpus, cache)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0] and expected in err[0] and "rebuilding it" in err[0]
    assert len(again.tokenizer) == 600
    if where == "tokens":  # same tokenizer: the rebuilt token files are the same
        assert again.folder == first.folder and _rows(again) == _rows(first) and again.meta == first.meta
    # (a retrained tokenizer may choose a few different tokens at the vocabulary's edge: WordPiece
    # breaks frequency ties in no fixed order, so its token files get their own key)
    # the rebuilt entries are sound: a third call reuses them silently
    third = _prepare(tiny_corpus, cache)
    assert capsys.readouterr().err == "" and _rows(third) == _rows(again)


def test_entries_without_manifest_are_still_accepted(built, tiny_corpus, capsys, monkeypatch):
    cache, first, tok_dir = built
    (first.folder / ds_mod.MANIFEST).unlink()  # as written by pldrop before manifests
    (tok_dir / ds_mod.MANIFEST).unlink()
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("a sound old entry should be reused")

    monkeypatch.setattr(ds_mod, "build_token_cache", boom)
    monkeypatch.setattr(ds_mod, "train_tokenizer", boom)
    assert _rows(_prepare(tiny_corpus, cache)) == _rows(first)
    assert capsys.readouterr().err == ""


def test_stale_temporary_entries_are_collected(built, tiny_corpus):
    cache, first, _ = built
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = cache / "tokens" / f".abc.tmp-{p.pid}-0123abcd"
    alive = cache / "tokens" / f".abd.tmp-{os.getppid()}-0123abcd"
    damaged = cache / "tokenizers" / f".abe.damaged-{p.pid}-89abcdef"
    for d in (dead, alive, damaged):
        d.mkdir()
        (d / "train.bin").write_bytes(b"x" * 10)
    _prepare(tiny_corpus, cache)
    assert not dead.exists() and not damaged.exists() and alive.exists()


def test_cache_root_that_is_a_file(tmp_path, tiny_corpus):
    from pldrop.errors import UserError

    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        _prepare(tiny_corpus, tmp_path / "f")


def test_manifest_records_sizes_and_meta_checksum(built):
    _, first, tok_dir = built
    files = json.loads((first.folder / ds_mod.MANIFEST).read_text())["files"]
    assert set(files) == {"meta.json", "train.bin", "valid.bin"}
    assert files["meta.json"]["sha256"] and files["train.bin"]["sha256"] is None
    assert files["train.bin"]["size"] == (first.folder / "train.bin").stat().st_size
    assert "tokenizer.json" in json.loads((tok_dir / ds_mod.MANIFEST).read_text())["files"]
