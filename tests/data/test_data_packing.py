import random

import pytest

from pldrop.data.packing import pack

CLS, SEP = 2, 3


def _docs(n, seed=0):
    rng = random.Random(seed)
    # Token ids >= 10 so they never collide with CLS/SEP; lengths include 1 and long docs.
    return [[rng.randrange(10, 1000) for _ in range(rng.choice([1, 3, 17, 40, 130]))] for _ in range(n)]


@pytest.mark.parametrize("seq_len", [3, 8, 32, 128])
def test_pack_loses_and_duplicates_no_token(seq_len):
    docs = _docs(60)
    rows = list(pack(docs, seq_len, CLS, SEP))
    assert all(len(r) == seq_len for r in rows[:-1])
    assert 3 <= len(rows[-1]) <= seq_len
    assert all(r[0] == CLS and r[-1] == SEP for r in rows)
    content = [t for r in rows for t in r[1:-1]]
    expected = []
    for i, d in enumerate(docs):
        expected += ([SEP] if i else []) + d
    assert content == expected  # same tokens, same order, nothing lost or repeated


def test_pack_exact_multiple_has_no_partial_row():
    rows = list(pack([[10, 11, 12, 13]], 4, CLS, SEP))
    assert rows == [[CLS, 10, 11, SEP], [CLS, 12, 13, SEP]]


def test_pack_skips_empty_documents_and_handles_no_input():
    assert list(pack([[], [10], [], [11]], 5, CLS, SEP)) == [[CLS, 10, SEP, 11, SEP]]
    assert list(pack([], 5, CLS, SEP)) == []


def test_pack_rejects_too_short_seq_len():
    with pytest.raises(ValueError, match="seq_len"):
        list(pack([[10]], 2, CLS, SEP))
