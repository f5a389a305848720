import json

import numpy as np
import pytest
import torch

from pldrop.data import dataset as ds_mod
from pldrop.data import TrainBatches, eval_batches, load_documents, prepare_data
from pldrop.errors import UserError

SEQ = 32


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_corpus):
    cache = tmp_path_factory.mktemp("cache")
    return prepare_data([str(tiny_corpus)], seq_len=SEQ, vocab_size=600, val_fraction=0.1, seed=0,
                        cache_dir=cache, out_tokenizer_dir=cache / "run_tok", progress=False)


def test_counts_and_files_are_consistent(prepared, tiny_corpus):
    meta, train, valid, tok = prepared.meta, prepared.train, prepared.valid, prepared.tokenizer
    tr, va = meta["splits"]["train"], meta["splits"]["valid"]
    assert tr["n_docs"] + va["n_docs"] == meta["n_docs"] == 93
    assert va["n_docs"] >= 1 and va["n_seqs"] >= 1
    assert (len(train), len(valid)) == (tr["n_seqs"], va["n_seqs"])
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(tok) == 600
    assert "tiny.txt" in prepared.credits
    assert (prepared.folder / "train.bin").stat().st_size == tr["n_seqs"] * SEQ * 2
    assert json.loads((prepared.folder / "meta.json").read_text()) == meta
    assert (prepared.folder.parent.parent / "run_tok" / "tokenizer.json").is_file()
    # Every document token is stored once: rows hold content + one [SEP] between documents.
    for split, stats in (("train", tr), ("valid", va)):
        rows = np.fromfile(prepared.folder / f"{split}.bin", dtype=np.uint16).reshape(-1, SEQ)
        assert (rows[:, 0] == tok.cls_token_id).all()
        content = sum(SEQ - 2 for _ in rows[:-1]) + stats["last_len"] - 2
        assert content == stats["n_tokens"] + stats["n_docs"] - 1


def test_split_follows_is_validation_and_tokens_match(prepared, tiny_corpus):
    tok = prepared.tokenizer
    docs = list(load_documents([str(tiny_corpus)]))
    from pldrop.data.corpora import plan_split

    plan = plan_split(docs, 0, 0.1)
    valid_docs = [d for d in docs if plan.is_valid(d)]
    ids = []
    for i, d in enumerate(valid_docs):
        ids += ([tok.sep_token_id] if i else []) + tok(d, add_special_tokens=False)["input_ids"]
    rows = [prepared.valid.tokens(i) for i in range(len(prepared.valid))]
    stored = torch.cat([r[1:-1] for r in rows[:-1]] + [rows[-1][1:prepared.valid.last_len - 1]]).tolist()
    assert stored == ids


def test_second_call_reuses_the_cache(prepared, tiny_corpus, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("cache should have been reused")

    monkeypatch.setattr(ds_mod, "build_token_cache", boom)
    monkeypatch.setattr(ds_mod, "train_tokenizer", boom)
    again = prepare_data([str(tiny_corpus)], seq_len=SEQ, vocab_size=600, val_fraction=0.1, seed=0,
                         cache_dir=prepared.folder.parent.parent)
    assert again.folder == prepared.folder and again.meta == prepared.meta


def test_given_tokenizer_and_other_seq_len_build_a_new_cache(prepared, tiny_corpus):
    other = prepare_data([str(tiny_corpus)], seq_len=16, tokenizer_dir=prepared.folder.parent.parent / "run_tok",
                         val_fraction=0.1, cache_dir=prepared.folder.parent.parent)
    assert other.folder != prepared.folder
    assert other.meta["n_tokens"] == prepared.meta["n_tokens"]
    assert other.train[0]["input_ids"].shape == (16,)


def test_train_batches_are_deterministic_resumable_and_sharded(prepared):
    train = prepared.train
    a = TrainBatches(train, batch_size=4, seed=3)
    spe = a.steps_per_epoch
    assert spe == len(train) // 4
    it = iter(a)
    first = [next(it) for _ in range(spe + 2)]  # crosses an epoch boundary
    resumed = next(iter(TrainBatches(train, batch_size=4, seed=3, start_step=spe + 1)))
    for k in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(resumed[k], first[spe + 1][k])
        assert first[0][k].shape == (4, SEQ)
    # one epoch visits each sequence at most once
    epoch0 = [i for s in range(spe) for i in a.indices(s)]
    assert len(set(epoch0)) == len(epoch0) == spe * 4
    assert a.indices(0) != a.indices(spe)  # new permutation next epoch
    # two ranks split each global batch into disjoint halves
    r0 = TrainBatches(train, batch_size=2, seed=3, rank=0, world_size=2)
    r1 = TrainBatches(train, batch_size=2, seed=3, rank=1, world_size=2)
    assert r0.indices(5) + r1.indices(5) == a.indices(5)
    assert r0.steps_per_epoch == spe
    # masks: the same example in another epoch gets different masks
    idx = a.indices(0)[0]
    assert not torch.equal(train.get(idx, 0)["labels"], train.get(idx, 1)["labels"])


def test_too_small_corpus_for_a_batch_is_a_user_error(prepared):
    with pytest.raises(UserError, match=r"has \d+ sequences, fewer than one global batch of 10000"):
        TrainBatches(prepared.train, batch_size=5000, seed=0, world_size=2)


def test_eval_batches_cover_the_validation_set_once(prepared):
    valid = prepared.valid
    seen = sum(b["input_ids"].shape[0] for b in eval_batches(valid, 3))
    assert seen == len(valid)
    sharded = [b for r in range(2) for b in eval_batches(valid, 3, rank=r, world_size=2)]
    assert sum(b["input_ids"].shape[0] for b in sharded) == len(valid)
    b1, b2 = next(eval_batches(valid, 3)), next(eval_batches(valid, 3))
    assert torch.equal(b1["labels"], b2["labels"])  # fixed validation masks


@pytest.mark.parametrize("kw, pattern", [
    ({"seq_len": 4}, "seq_len must be an integer >= 8"),
    ({"val_fraction": 0.0}, "val_fraction must be between 0 and 1"),
    ({"mlm_prob": 1.5}, "mlm_prob must be between 0 and 1"),
])
def test_bad_arguments(tiny_corpus, tmp_path, kw, pattern):
    with pytest.raises(UserError, match=pattern):
        prepare_data([str(tiny_corpus)], cache_dir=tmp_path, **kw)


def test_empty_corpus_fails_cleanly_during_tokenizer_training(tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(UserError, match=r"blank\.txt has no text"):
        prepare_data([str(tmp_path / "blank.txt")], cache_dir=tmp_path / "c", vocab_size=100)
    assert not list((tmp_path / "c" / "tokenizers").iterdir())  # no half-written cache left
