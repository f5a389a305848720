"""The word-order probe: a model without positions cannot tell shuffled text from text; the report says so."""

import pytest
import torch

from pldrop.data.masking import mask_tokens
from pldrop.models import build_model
from pldrop.reporting.compare_report import render_word_order
from pldrop.train.analysis import word_order
from pldrop.train.evaluation import evaluate, shuffle_order


class _Rows(torch.utils.data.Dataset):
    """Validation-like examples: random token rows, [CLS] first, the last row half padding."""

    def __init__(self, n=12, seq=16, vocab=50):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            ids = torch.randint(5, vocab, (seq,), generator=g)
            ids[0] = 2
            att = torch.ones(seq, dtype=torch.long)
            if i == n - 1:
                ids[seq // 2:], att[seq // 2:] = 0, 0
            x, y = mask_tokens(ids, generator=g, mask_id=4, vocab_size=vocab, special_ids=[0, 1, 2, 3, 4], mlm_prob=0.3)
            self.items.append({"input_ids": x, "attention_mask": att, "labels": y})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _model(positions: bool):
    model = build_model("baseline", 50, "tiny", seq_len=16, seed=0).eval()
    if not positions:  # no position signal at all: the encoder is permutation-equivariant
        with torch.no_grad():
            model.bert.embeddings.position_embeddings.weight.zero_()
    return model


def test_shuffle_keeps_tokens_targets_padding_and_cls():
    data = _Rows()
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in data[0]}
    out = shuffle_order(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["attention_mask"], batch["attention_mask"])
    assert torch.equal(out["input_ids"][:, 0], batch["input_ids"][:, 0])
    assert torch.equal(out["input_ids"][-1, 8:], batch["input_ids"][-1, 8:])  # padding stays
    assert not torch.equal(out["input_ids"], batch["input_ids"])
    for row in range(len(data)):  # same tokens, each with its own target
        pairs = sorted(zip(batch["input_ids"][row].tolist(), batch["labels"][row].tolist()))
        assert pairs == sorted(zip(out["input_ids"][row].tolist(), out["labels"][row].tolist()))


@pytest.mark.parametrize("positions, same", [(False, True), (True, False)])
def test_probe_separates_bag_of_words_from_order(positions, same):
    model, data = _model(positions), _Rows()
    plain = evaluate(model, data, 4, 0, False, torch.device("cpu"))
    shuf = evaluate(model, data, 4, 0, False, torch.device("cpu"), shuffled=True)
    assert set(shuf) == {"val_loss_shuffled", "val_accuracy_shuffled"}
    close = shuf["val_loss_shuffled"] == pytest.approx(plain["val_loss"], rel=1e-5, abs=1e-6)
    assert close is same
    if same:
        assert shuf["val_accuracy_shuffled"] == plain["val_accuracy"]
    again = evaluate(model, data, 4, 0, False, torch.device("cpu"), shuffled=True)
    assert again == shuf  # fixed permutations: every run and arm is probed alike


@pytest.mark.parametrize("accs, verdict", [
    ({"baseline": (0.136, 0.135), "pld": (0.130, 0.131)}, "bag-of-words predictor, the plateau"),
    ({"baseline": (0.31, 0.12), "pld": (0.14, 0.139)}, "Pre-LN + PLD less than 0.02 of accuracy"),
    ({"baseline": (0.31, 0.12), "pld": (0.29, 0.13)}, "the models read word order"),
    ({"baseline": (0.31, None), "pld": (0.29, None)}, None),  # runs made before the probe existed
])
def test_word_order_sentence(accs, verdict):
    an = {"word_order": {a: word_order({"final_val_accuracy": x, "final_val_accuracy_shuffled": s})
                         for a, (x, s) in accs.items()}}
    lines = render_word_order(an, {"baseline": "Post-LN BERT", "pld": "Pre-LN + PLD"})
    if verdict is None:
        assert lines == []
        return
    text = lines[0]
    assert verdict in text
    for a, (x, s) in accs.items():
        assert f"{x:.3f} → {s:.3f}" in text
