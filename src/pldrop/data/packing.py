"""Pack documents' token ids into fixed-length rows: BERT sequences ``[CLS] ... [SEP]`` (:func:`pack`) or a
causal LM's ``doc EOS doc EOS ...`` stream (:func:`pack_causal`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


def pack(token_ids_iter: Iterable[Sequence[int]], seq_len: int, cls_id: int,
         sep_id: int) -> Iterator[list[int]]:
    """Concatenate documents (a ``sep_id`` between two documents) and cut the stream into
    sequences ``[cls_id] + chunk + [sep_id]`` of exactly ``seq_len`` tokens.

    No token is lost or duplicated: the final chunk, if partial, is yielded too (shorter than
    ``seq_len``; the caller pads it). Documents are never truncated; a long one simply spans
    several sequences, as in BERT's "full-sentences" packing.

    Args:
        token_ids_iter: one sequence of token ids per document, without special tokens.
        seq_len: length of every sequence but the last, special tokens included (>= 3).
        cls_id: id that starts each sequence.
        sep_id: id that ends each sequence and separates documents.

    >>> list(pack([[5, 6, 7], [8, 9]], seq_len=5, cls_id=2, sep_id=3))
    [[2, 5, 6, 7, 3], [2, 3, 8, 9, 3]]
    >>> list(pack([[5, 6, 7, 8], [9]], seq_len=4, cls_id=2, sep_id=3))
    [[2, 5, 6, 3], [2, 7, 8, 3], [2, 3, 9, 3]]
    >>> list(pack([[5, 6, 7]], seq_len=4, cls_id=2, sep_id=3))
    [[2, 5, 6, 3], [2, 7, 3]]
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS], a token, [SEP]), got {seq_len}")
    width = seq_len - 2
    buf: list[int] = []
    first = True
    for ids in token_ids_iter:
        if len(ids) == 0:  # a document with no tokens is no document (no double [SEP])
            continue
        if not first:
            buf.append(sep_id)
        first = False
        buf.extend(ids)
        if len(buf) >= width:
            n_full = len(buf) // width * width
            for i in range(0, n_full, width):
                yield [cls_id, *buf[i:i + width], sep_id]
            del buf[:n_full]
    if buf:
        yield [cls_id, *buf, sep_id]


def pack_causal(token_ids_iter: Iterable[Sequence[int]], seq_len: int, eos_id: int) -> Iterator[list[int]]:
    """Concatenate documents, each followed by ``eos_id``, and cut the stream into rows of ``seq_len``
    tokens: a causal LM's packing (GPT-2, Llama), no start or end token per row.

    No token is lost or duplicated; the final row, if partial, is yielded too (the caller pads it).
    A document with no tokens is skipped (no double EOS).

    >>> list(pack_causal([[5, 6, 7], [8, 9]], seq_len=4, eos_id=0))
    [[5, 6, 7, 0], [8, 9, 0]]
    >>> list(pack_causal([[5, 6], [], [7, 8, 9]], seq_len=3, eos_id=0))
    [[5, 6, 0], [7, 8, 9], [0]]
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (a token and the next), got {seq_len}")
    buf: list[int] = []
    for ids in token_ids_iter:
        if len(ids) == 0:
            continue
        buf.extend(ids)
        buf.append(eos_id)
        if len(buf) >= seq_len:
            n_full = len(buf) // seq_len * seq_len
            for i in range(0, n_full, seq_len):
                yield buf[i:i + seq_len]
            del buf[:n_full]
    if buf:
        yield buf
