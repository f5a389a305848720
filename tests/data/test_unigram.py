import math
from collections import Counter

import numpy as np
import pytest
import torch

from pldrop.data import prepare_data
from pldrop.data.masking import IGNORE_INDEX
from pldrop.data.unigram import unigram_for_data, unigram_loss


def test_recomputed_by_hand_on_a_tiny_corpus():
    # vocab: 0 [PAD], 1 [CLS], 2 [SEP], 3 "the", 4 "cat", 5 "sat", 6 "mat" (never seen)
    train = np.array([[1, 3, 4, 5, 3, 2], [1, 3, 4, 2, 0, 0]])  # "the cat sat the" | "the cat" + padding
    labels = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX, 6], [5, IGNORE_INDEX, 4, IGNORE_INDEX]])
    r = unigram_loss(train, labels, vocab_size=7, special_ids=[0, 1, 2])
    # counts: the 3, cat 2, sat 1, mat 0 -> N = 6; four non-special ids: p = (c + 1) / 10
    p = {3: 0.4, 4: 0.3, 5: 0.2, 6: 0.1}
    assert r["n_labels"] == 4
    assert r["loss"] == pytest.approx(-(math.log(p[3]) + math.log(p[6]) + math.log(p[5]) + math.log(p[4])) / 4)
    assert r["accuracy"] == pytest.approx(1 / 4)  # always "the": right once
    assert r["entropy"] == pytest.approx(-sum(q * math.log(q) for q in p.values()))


def test_specials_count_when_not_declared_and_bad_labels_are_refused():
    with_specials = unigram_loss([0, 0, 0, 3], [3], vocab_size=4)
    without = unigram_loss([0, 0, 0, 3], [3], vocab_size=4, special_ids=[0])
    assert with_specials["loss"] == pytest.approx(-math.log(2 / 8))
    assert without["loss"] == pytest.approx(-math.log(2 / 4))
    with pytest.raises(ValueError):
        unigram_loss([3], [0], vocab_size=4, special_ids=[0])
    assert math.isnan(unigram_loss([3], [IGNORE_INDEX], vocab_size=4)["loss"])


def test_for_prepared_data_matches_a_direct_count(tmp_path, tiny_corpus):
    data = prepare_data([str(tiny_corpus)], seq_len=32, vocab_size=600, val_fraction=0.1, seed=0,
                        cache_dir=tmp_path, progress=False)
    r = unigram_for_data(data, max_seqs=0)
    specials = set(data.train.special_ids)
    counts = Counter(int(t) for t in np.asarray(data.train.rows).reshape(-1) if int(t) not in specials)
    n, v = sum(counts.values()), len(data.tokenizer) - len(specials)
    labels = [int(t) for i in range(len(data.valid)) for t in data.valid[i]["labels"] if t != IGNORE_INDEX]
    expect = -sum(math.log((counts[t] + 1) / (n + v)) for t in labels) / len(labels)
    assert r["n_labels"] == len(labels) > 0
    assert r["loss"] == pytest.approx(expect)
    top = counts.most_common(1)[0][0]
    assert r["accuracy"] == pytest.approx(sum(t == top for t in labels) / len(labels))
    # a fresh model's loss, log(V), is far above the plateau; the plateau is below it
    assert r["loss"] < math.log(len(data.tokenizer))
    assert unigram_for_data(data, max_seqs=1)["n_labels"] <= r["n_labels"]
