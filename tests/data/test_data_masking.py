import numpy as np
import pytest
import torch

from pldrop.data.masking import IGNORE_INDEX, generator_for, mask_tokens
from pldrop.data.packed import PackedDataset

PAD, CLS, SEP, MASK, V = 0, 2, 3, 4, 1000
SPECIALS = [PAD, 1, CLS, SEP, MASK]


def _ids(n_rows=160, seq_len=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, V, (n_rows, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::7, -20:-1] = PAD  # some padding too
    return ids


def test_mask_statistics_follow_bert():
    ids = _ids()  # 20,480 tokens
    x, y = mask_tokens(ids, generator=torch.Generator().manual_seed(1), mask_id=MASK,
                       vocab_size=V, special_ids=SPECIALS)
    special = torch.isin(ids, torch.tensor(SPECIALS))
    selected = y != IGNORE_INDEX
    assert not (selected & special).any()          # special tokens are never selected
    assert torch.equal(x[special], ids[special])   # ...nor changed
    assert torch.equal(y[selected], ids[selected])  # labels hold the original ids
    assert torch.equal(x[~selected], ids[~selected])  # unselected tokens unchanged
    rate = selected.sum().item() / (~special).sum().item()
    assert rate == pytest.approx(0.15, abs=0.015)
    n = selected.sum().item()
    masked = (x[selected] == MASK).sum().item() / n
    kept = (x[selected] == ids[selected]).sum().item() / n
    random = 1 - masked - kept
    assert masked == pytest.approx(0.8, abs=0.04)
    assert kept == pytest.approx(0.1, abs=0.03)
    assert random == pytest.approx(0.1, abs=0.03)


def test_mask_is_deterministic_per_generator_seed():
    ids = _ids(4)
    a = mask_tokens(ids, generator=generator_for("mlm", 0, 1, 5), mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    b = mask_tokens(ids, generator=generator_for("mlm", 0, 1, 5), mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    c = mask_tokens(ids, generator=generator_for("mlm", 0, 2, 5), mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(ids, _ids(4))  # input not modified


@pytest.fixture
def bin_file(tmp_path):
    rows = _ids(10, 32).numpy().astype(np.uint16)
    rows[-1, 20:] = PAD
    path = tmp_path / "x.bin"
    path.write_bytes(rows.tobytes())
    return path, rows


def _ds(path, **kw):
    return PackedDataset(path, n_seqs=10, seq_len=32, dtype="uint16", last_len=20, mask_id=MASK,
                         pad_id=PAD, vocab_size=V, special_ids=SPECIALS, seed=7, **kw)


def test_training_masks_depend_on_seed_epoch_index_only(bin_file):
    path, rows = bin_file
    ds = _ds(path)
    assert torch.equal(ds.tokens(3), torch.from_numpy(rows[3].astype(np.int64)))
    e0 = ds.get(3, epoch=0)
    assert torch.equal(e0["labels"], _ds(path).get(3, epoch=0)["labels"])  # fresh object, same masks
    assert torch.equal(e0["input_ids"], ds.get(3, epoch=0)["input_ids"])
    assert not torch.equal(e0["labels"], ds.get(3, epoch=1)["labels"])   # re-drawn each epoch
    assert not torch.equal(e0["labels"], ds.get(4, epoch=0)["labels"])
    ds.set_epoch(1)
    assert torch.equal(ds[3]["labels"], ds.get(3, epoch=1)["labels"])


def test_validation_masks_are_fixed_and_last_row_padding_is_masked_out(bin_file):
    path, _ = bin_file
    ds = _ds(path, fixed_masks=True)
    assert torch.equal(ds.get(2, epoch=0)["labels"], ds.get(2, epoch=5)["labels"])
    last = ds[9]
    assert last["attention_mask"][:20].eq(1).all() and last["attention_mask"][20:].eq(0).all()
    assert last["labels"][20:].eq(IGNORE_INDEX).all()
    assert ds[0]["attention_mask"].eq(1).all()
    assert len(ds) == 10 and ds[0]["input_ids"].dtype == torch.long
    with pytest.raises(IndexError):
        ds.tokens(10)


def test_dataset_pickles_without_copying_the_memmap(bin_file):
    import pickle

    path, _ = bin_file
    ds = _ds(path)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._rows is None
    assert torch.equal(clone.get(1, 0)["labels"], ds.get(1, 0)["labels"])


def test_every_sequence_has_a_target_even_at_low_mlm_prob(tmp_path):
    """seq_len 16, batch 1, mlm_prob 0.01: without the fix most batches had no masked token (NaN loss)."""
    from pldrop.data.batches import TrainBatches, eval_batches

    rows = _ids(64, 16, seed=3).numpy().astype(np.uint16)
    rows[:, 1:-1] = _ids(64, 16, seed=4)[:, 1:-1].clamp(min=10).numpy()  # packed rows: no padding inside
    rows[-1, 8], rows[-1, 9:] = SEP, PAD  # but a short last row
    path = tmp_path / "x.bin"
    path.write_bytes(rows.tobytes())
    kw = dict(n_seqs=64, seq_len=16, dtype="uint16", last_len=9, mask_id=MASK, pad_id=PAD, vocab_size=V,
              special_ids=SPECIALS, seed=0, mlm_prob=0.01)
    train, valid = PackedDataset(path, **kw), PackedDataset(path, fixed_masks=True, **kw)
    raw_draws = 0  # sequences the Bernoulli draw alone leaves without a target, for the record
    for step, batch in zip(range(300), TrainBatches(train, batch_size=1, seed=0)):
        n = (batch["labels"] != IGNORE_INDEX).sum().item()
        assert n >= 1, f"step {step}: no masked token"
        raw_draws += n == 1
        sel = batch["labels"] != IGNORE_INDEX
        assert not torch.isin(batch["labels"][sel], torch.tensor(SPECIALS)).any()  # never a special token
    assert raw_draws > 200  # at p=0.01 nearly all sequences got exactly the one forced target
    for batch in eval_batches(valid, batch_size=1):
        assert (batch["labels"] != IGNORE_INDEX).sum() >= 1
        sel = batch["labels"] != IGNORE_INDEX
        assert (batch["attention_mask"][sel] == 1).all()  # not on the last row's padding


def test_forced_target_is_seeded_and_leaves_other_masks_unchanged():
    ids = torch.randint(10, V, (200, 16), generator=torch.Generator().manual_seed(5))
    ids[:, 0], ids[:, -1] = CLS, SEP
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(9), mask_id=MASK, vocab_size=V,
                    special_ids=SPECIALS, mlm_prob=0.05)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(9), mask_id=MASK, vocab_size=V,
                    special_ids=SPECIALS, mlm_prob=0.05)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    n = (a[1] != IGNORE_INDEX).sum(-1)
    assert (n >= 1).all()
    # rows the draw already covered are exactly what the plain 80/10/10 draw gives (draws made in the same order)
    g = torch.Generator().manual_seed(9)
    special = torch.isin(ids, torch.tensor(SPECIALS))
    sel = torch.bernoulli(torch.full(ids.shape, 0.05), generator=g).bool() & ~special
    drawn = sel.any(-1)
    assert drawn.sum() > 50 and (~drawn).sum() > 50
    assert torch.equal(a[1][drawn] != IGNORE_INDEX, sel[drawn])
    assert ((a[1][~drawn] != IGNORE_INDEX).sum(-1) == 1).all()
    # the forced position moves with the seed
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(10), mask_id=MASK, vocab_size=V,
                    special_ids=SPECIALS, mlm_prob=0.05)
    assert not torch.equal(a[1], c[1])


def test_a_row_of_only_special_tokens_stays_without_target():
    ids = torch.tensor([[CLS, PAD, PAD, SEP], [CLS, 11, 12, SEP]])
    x, y = mask_tokens(ids, generator=torch.Generator().manual_seed(0), mask_id=MASK, vocab_size=V,
                       special_ids=SPECIALS, mlm_prob=0.001)
    assert (y[0] == IGNORE_INDEX).all() and torch.equal(x[0], ids[0])
    assert (y[1] != IGNORE_INDEX).sum() == 1
