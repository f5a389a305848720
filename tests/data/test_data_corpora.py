import json

import pytest

from pldrop.data import corpora
from pldrop.data.corpora import (credits_for, fingerprint_sources, is_validation, load_documents,
                                 plan_split)
from pldrop.errors import UserError


def docs_of(*sources, **kw):
    return list(load_documents([str(s) for s in sources], **kw))


# --- local formats -----------------------------------------------------------------------

def test_txt_blank_lines_separate_documents(tmp_path, tiny_corpus):
    f = tmp_path / "a.txt"
    f.write_text("First line\nstill first.\n\n  \n\nSecond.\r\n\r\nThird\n")
    assert docs_of(f) == ["First line\nstill first.", "Second.", "Third"]
    tiny = docs_of(tiny_corpus)
    assert len(tiny) == 93 and all(d.strip() == d and "\n\n" not in d for d in tiny)


def test_folder_and_glob_read_txt_files_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b" / "skip.json").write_text("[]")
    assert docs_of(tmp_path) == ["one", "two"]
    assert docs_of(tmp_path / "**" / "*.txt") == ["one", "two"]


def test_json_list_json_lines_and_jsonl(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps([{"text": "alpha"}, {"text": ""}, {"text": "beta"}]))
    (tmp_path / "o.json").write_text('{"body": "gamma"}\n\n{"body": "delta"}\n')
    (tmp_path / "x.jsonl").write_text('{"text": "eps", "id": 1}\n')
    assert docs_of(tmp_path / "l.json") == ["alpha", "beta"]
    assert docs_of(tmp_path / "o.json", text_field="body") == ["gamma", "delta"]
    assert docs_of(tmp_path / "x.jsonl") == ["eps"]


def test_csv_with_quotes_and_tsv(tmp_path):
    (tmp_path / "a.csv").write_text('id,content\n1,"Hello, world\nsecond line"\n2,plain\n')
    (tmp_path / "b.tsv").write_text('text\tlabel\n"quoted" start\t1\nnext\t0\n')
    assert docs_of(tmp_path / "a.csv", text_column="content") == ["Hello, world\nsecond line", "plain"]
    assert docs_of(tmp_path / "b.tsv") == ['"quoted" start', "next"]


def test_byte_order_mark_is_dropped(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.txt").write_bytes(bom + b"Hello")
    (tmp_path / "a.json").write_bytes(bom + b'[{"text": "x"}]')
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"text": "y"}')
    (tmp_path / "a.csv").write_bytes(bom + b"text\nz\n")
    assert docs_of(*(tmp_path / f"a.{s}" for s in ("txt", "json", "jsonl", "csv"))) == ["Hello", "x", "y", "z"]


def test_several_sources_are_concatenated(tmp_path):
    (tmp_path / "a.txt").write_text("a1\n\na2")
    (tmp_path / "b.jsonl").write_text('{"text": "b1"}')
    assert docs_of(tmp_path / "a.txt", tmp_path / "b.jsonl") == ["a1", "a2", "b1"]
    assert list(load_documents(tmp_path / "a.txt")) == ["a1", "a2"]  # one Path is one source


# --- errors: one line, naming the file ------------------------------------------------------

@pytest.mark.parametrize("name, content, kw, pattern", [
    ("empty.txt", b"\n \n\n", {}, r"empty\.txt has no text"),
    ("bin.txt", b"abc\ndef\0ghi", {}, r"bin\.txt looks like a binary file \(NUL byte at offset 7\)"),
    ("latin.txt", b"ok\ncaf\xe9\n", {}, r"latin\.txt is not UTF-8 text \(byte 0xe9 at offset 6\)"),
    ("f.jsonl", b'{"body": "x"}\n', {}, r"f\.jsonl line 1 has no field 'text' \(fields: body\)"),
    ("f.json", b'[{"text": "a"}, 3]', {}, r"f\.json item 1 is a JSON int"),
    ("bad.jsonl", b'{"text": "a"}\n{oops\n', {}, r"bad\.jsonl line 2 is not valid JSON"),
    ("f.csv", b"id,body\n1,x\n", {}, r"f\.csv has no column 'text' \(columns: id, body\)"),
    ("f.parquet", b"PAR1", {}, r"unsupported corpus file .*f\.parquet"),
])
def test_bad_files_raise_one_line_user_errors(tmp_path, name, content, kw, pattern):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=pattern) as e:
        docs_of(tmp_path / name, **kw)
    assert "\n" not in str(e.value)


def test_missing_paths_and_unknown_recipes(tmp_path):
    with pytest.raises(UserError, match=r"corpus path not found: .*nope\.txt"):
        docs_of(tmp_path / "nope.txt")
    with pytest.raises(UserError, match=r"unknown corpus 'wiki-vitall'.*wiki-vital, bbc-news"):
        docs_of("wiki-vitall")
    with pytest.raises(UserError, match=r"no files match"):
        docs_of(tmp_path / "*.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match=r"folder .*d holds no \.txt files"):
        docs_of(tmp_path / "d")
    with pytest.raises(UserError, match="no corpus given"):
        docs_of()


def test_all_sources_are_checked_before_reading(tmp_path):
    (tmp_path / "a.txt").write_text("fine")
    it = load_documents([str(tmp_path / "a.txt"), str(tmp_path / "missing.txt")])
    with pytest.raises(UserError, match="missing.txt"):
        next(it)


# --- hf: ----------------------------------------------------------------------------------

class FakeDataset(list):
    column_names = ["text", "label"]
    _fingerprint = "abc123"


def test_hf_source_uses_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return FakeDataset([{"text": " one ", "label": 0}, {"text": "", "label": 1}, {"text": "two", "label": 1}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert docs_of("hf:wikitext:wikitext-2-raw-v1") == ["one", "two"]
    assert calls == [("wikitext", "wikitext-2-raw-v1", "train")]
    with pytest.raises(UserError, match=r"hf:x has no field 'body' \(fields: text, label\)"):
        docs_of("hf:x", text_field="body")
    assert fingerprint_sources("hf:a") == fingerprint_sources("hf:a") != fingerprint_sources("hf:b")


def _network(monkeypatch, reachable: bool):
    """The hub's offline mode off (tests run with HF_HUB_OFFLINE=1), and a network that reaches
    the hub or does not -- no real connection either way."""
    import socket

    import datasets.config
    import huggingface_hub.constants as hub

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    tried = []

    def connect(address, timeout=None, *a, **k):
        tried.append(address)
        if not reachable:
            raise OSError(101, "Network is unreachable")
        return type("Sock", (), {"close": lambda self: None})()

    monkeypatch.setattr(socket, "create_connection", connect)
    return tried


def _offline_flags():
    import datasets.config
    import huggingface_hub.constants as hub

    return hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE


@pytest.mark.parametrize("cached", [False, True])
def test_hf_with_the_hub_unreachable_loads_offline_at_once(monkeypatch, cached):
    """No half minute of retries: an unreachable hub switches the load to the local cache."""
    import datasets

    tried = _network(monkeypatch, reachable=False)
    seen = []

    def load(*a, **k):
        seen.append(_offline_flags())
        if cached:
            return FakeDataset([{"text": "from the cache", "label": 0}])
        raise ConnectionError("Couldn't reach 'nosuch/corpus' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", load)
    if cached:
        assert docs_of("hf:nosuch/corpus") == ["from the cache"]
    else:
        with pytest.raises(UserError, match=r"could not load hf:nosuch/corpus: the Hugging Face hub \(huggingface.co\) "
                                            r"cannot be reached and it is not in the local Hugging Face cache") as e:
            docs_of("hf:nosuch/corpus")
        assert "\n" not in str(e.value) and "connect to the network, or give a local file" in str(e.value)
    assert tried == [("huggingface.co", 443)] and seen == [(True, True)]  # loaded in offline mode
    assert _offline_flags() == (False, False)  # and the mode restored after


def test_hf_with_the_hub_unreachable_real_datasets_fails_fast(monkeypatch):
    _network(monkeypatch, reachable=False)
    with pytest.raises(UserError, match="cannot be reached and it is not in the local Hugging Face cache"):
        docs_of("hf:pldrop-tests/no-such-corpus")


def test_hf_failure_is_a_user_error(monkeypatch):
    import datasets

    _network(monkeypatch, reachable=True)

    def offline(*a, **k):
        assert _offline_flags() == (False, False)  # a reachable hub: online as the user set it
        raise ConnectionError("Couldn't reach 'nosuch/corpus' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load hf:nosuch/corpus \(ConnectionError: Couldn't reach.*\); "
                                        r"the Hugging Face hub or a local HF cache must be reachable") as e:
        docs_of("hf:nosuch/corpus")
    assert "\n" not in str(e.value)


# --- split ----------------------------------------------------------------------------------

def test_split_is_stable_and_close_to_the_fraction():
    docs = [f"Document {i} talks about topic {i % 37}." for i in range(4000)]
    flags = [is_validation(d, 0, 0.1) for d in docs]
    assert flags == [is_validation(d, 0, 0.1) for d in reversed(docs)][::-1]  # order-free
    assert sum(flags) / len(docs) == pytest.approx(0.1, abs=0.02)
    other = [is_validation(d, 1, 0.1) for d in docs]
    assert other != flags  # the seed matters


def test_doc_hash_is_pinned():
    # blake2b is fully specified, so these hold on every machine and Python version; a change
    # here would silently reshuffle every user's train/validation split.
    assert corpora.doc_hash("hello", 0) == 0xA7B6EDA801E5347D
    assert corpora.doc_hash("hello", 1) == 0xCB01BE789938CEF5


def test_split_plan_guarantees_a_validation_document():
    docs = ["a", "b", "c", "d"]
    plan = plan_split(docs, seed=0, fraction=1e-9)
    assert plan.n_valid == 1 and sum(plan.is_valid(d) for d in docs) == 1
    plan = plan_split(docs, seed=0, fraction=1 - 1e-12)
    assert plan.n_valid == 3 and sum(plan.is_valid(d) for d in docs) == 3
    plan = plan_split(["x", "x", "y"], seed=0, fraction=1e-9)
    assert sum(plan.is_valid(d) for d in ["x", "x", "y"]) == plan.n_valid >= 1


def test_credits_name_every_source():
    text = credits_for(["wiki-vital", "bbc-news", "hf:wikitext", "my.txt"])
    assert "CC BY-SA 4.0" in text and "research use only" in text
    assert "huggingface.co/datasets/wikitext" in text and "`my.txt`" in text


def test_local_fingerprint_follows_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    first = fingerprint_sources([str(f)])
    f.write_text("two")
    assert fingerprint_sources([str(f)]) != first
    assert fingerprint_sources([str(f)], text_field="x") != fingerprint_sources([str(f)])


# --- hostile paths and files (issue 9) ---------------------------------------------------------

def test_symlink_loops_visit_each_real_file_once(tmp_path):
    import time

    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.txt").write_text("beta")
    (d / "loop").symlink_to(d)  # two loops: one to the top, one to a sibling
    (d / "sub" / "back").symlink_to(d)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.txt").write_text("gamma")
    (d / "ext").symlink_to(tmp_path / "other")  # a linked folder outside is followed, once
    (d / "a-again.txt").symlink_to(d / "a.txt")  # the same file by a second name: read once
    t = time.perf_counter()
    for source in (d, f"{d}/**/*.txt", f"{d}/**"):
        assert sorted(docs_of(source)) == ["alpha", "beta", "gamma"], source
    assert time.perf_counter() - t < 5
    assert docs_of(f"{d}/*.txt") == ["alpha"]  # no **: one level, the link to a.txt counted once


def test_glob_keeps_hidden_names_out_like_glob(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden")
    (tmp_path / ".dot.txt").write_text("dot")
    (tmp_path / "v.txt").write_text("visible")
    assert docs_of(f"{tmp_path}/**/*.txt") == ["visible"]


@pytest.mark.parametrize("name", ["notes[1].txt", "what?.txt", "star*.txt"])
def test_existing_file_with_glob_characters_is_that_file(tmp_path, name):
    (tmp_path / name).write_text("the file itself")
    (tmp_path / "notes1.txt").write_text("another file the pattern would match")
    (tmp_path / "whatX.txt").write_text("another")
    (tmp_path / "star-other.txt").write_text("another")
    assert docs_of(tmp_path / name) == ["the file itself"]
    assert fingerprint_sources([str(tmp_path / name)]) != fingerprint_sources([str(tmp_path / "notes1.txt")])


@pytest.mark.parametrize("encoding,expected", [
    ("utf-16", "is UTF-16 text"), ("utf-16-le", "is UTF-16 text"), ("utf-16-be", "is UTF-16 text"),
    ("utf-32", "is UTF-32 text"),
])
def test_utf16_is_named(tmp_path, encoding, expected):
    f = tmp_path / "wide.txt"
    f.write_bytes("Hello world\nsecond line\n".encode(encoding))
    with pytest.raises(UserError, match=expected) as e:
        docs_of(f)
    assert "binary" not in str(e.value) and "re-encode it as UTF-8" in str(e.value) and "\n" not in str(e.value)


def test_a_huge_single_line_is_split_into_documents(tmp_path):
    from pldrop.data.local import MAX_DOC_CHARS

    words = " ".join(f"w{i % 997}" for i in range(200_000))  # ~1.1 MB on one line, no blank line
    f = tmp_path / "one-line.txt"
    f.write_text(words + "\n")
    docs = docs_of(f)
    assert len(docs) >= len(words) // MAX_DOC_CHARS and all(len(d) <= MAX_DOC_CHARS for d in docs)
    assert " ".join(docs) == words  # cut at spaces: nothing lost, no word broken
    j = tmp_path / "one.jsonl"
    j.write_text(json.dumps({"text": words}) + "\n")
    assert docs_of(j) == docs


def test_local_paths_name_what_is_read(tmp_path):
    from pldrop.data.corpora import local_paths

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "b.txt").write_text("b")
    (tmp_path / "x?.txt").write_text("x")
    got = local_paths(["wiki-vital", str(tmp_path / "d"), f"{tmp_path}/d/*.txt", str(tmp_path / "x?.txt"),
                       "hf:foo", str(tmp_path / "missing.txt")])
    assert got == [tmp_path / "d", tmp_path / "d" / "a.txt", tmp_path / "d" / "b.txt", tmp_path / "x?.txt"]
