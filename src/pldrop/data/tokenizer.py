"""Train a tokenizer on a corpus, save it, load it back: WordPiece for masked LMs, byte-level BPE for causal LMs.

The masked-LM tokenizer is built with Hugging Face ``tokenizers`` exactly as BERT's is (BertNormalizer,
BertPreTokenizer, WordPiece with ``##`` continuations, ``[CLS] A [SEP] B [SEP]`` template) and
wrapped as a ``transformers`` ``BertTokenizerFast``, so ``AutoTokenizer.from_pretrained(dir)``
loads it and returns ``token_type_ids`` for sentence pairs.

The causal-LM tokenizer is the decoder convention (GPT-2, Llama 3): a byte-level BPE, cased, with no
unknown token (every byte is in the vocabulary, so any text round-trips exactly), ``<|endoftext|>`` as
its start and end of document, ``<|pad|>`` for padding; a ``PreTrainedTokenizerFast``.
:func:`train_tokenizer` picks one by the objective.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pldrop.errors import UserError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
EOS_TOKEN, PAD_TOKEN = "<|endoftext|>", "<|pad|>"  # the byte-level BPE's end of document (also its start) and padding
BPE_SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]
BPE_MIN_VOCAB = 256 + len(BPE_SPECIAL_TOKENS)  # the 256 bytes and the special tokens
MODEL_MAX_LENGTH = 512  # BERT's position-embedding size; fine-tuning truncates to this


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True,
                    out_dir: str | Path | None = None, *, min_frequency: int = 2,
                    show_progress: bool = False):
    """Train a WordPiece vocabulary on ``texts`` and return it as a ``BertTokenizerFast``.

    Args:
        texts: documents (any iterable; it is consumed once, streaming).
        vocab_size: target vocabulary size, special tokens included. A small corpus can give
            fewer entries; ``len(tokenizer)`` is the size to build the model with.
        lowercase: lowercase and strip accents (uncased BERT) or keep case (cased BERT).
        out_dir: if given, ``save_pretrained`` the tokenizer there.
        min_frequency: a merge must occur at least this often to enter the vocabulary.
        show_progress: let ``tokenizers`` draw its own progress bar.

    The special tokens get ids 0..4 in the order ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    if not isinstance(vocab_size, int) or vocab_size < 32:
        raise UserError(f"vocab_size must be an integer >= 32, got {vocab_size!r}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # strip_accents=None follows `lowercase`, as BertTokenizerFast rebuilds it on load.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, show_progress=show_progress,
                                        continuing_subword_prefix="##")
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer breaks frequency ties in no fixed order, so two trainings on the same corpus
    # number the same vocabulary differently; renumber it (special tokens first, then sorted), so
    # the token ids -- and every cached token file -- are the same on every run and machine.
    vocab = tok.get_vocab()
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS + rest)}, unk_token="[UNK]",
                                 continuing_subword_prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, strip_accents=None,
                             unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]",
                             model_max_length=MODEL_MAX_LENGTH)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, out_dir: str | Path | None = None, *,
              min_frequency: int = 2, show_progress: bool = False):
    """Train a byte-level BPE (GPT-2 style) on ``texts`` and return it as a ``PreTrainedTokenizerFast``.

    Args:
        texts: documents (any iterable; it is consumed once, streaming).
        vocab_size: target vocabulary size, the 256 bytes and the special tokens included (so at
            least :data:`BPE_MIN_VOCAB`). A small corpus can give fewer entries.
        out_dir: if given, ``save_pretrained`` the tokenizer there.
        min_frequency: a merge must occur at least this often to enter the vocabulary.
        show_progress: let ``tokenizers`` draw its own progress bar.

    Cased, no normalizer, no unknown token. Ids: ``<|endoftext|>`` 0, ``<|pad|>`` 1, the 256 byte symbols
    (sorted), then the merged tokens in merge order -- a numbering fixed by the merges alone, so the
    token ids are the same on every run and machine. It adds no special tokens to an encoding (as
    GPT-2's): documents are packed as ``doc <|endoftext|> doc <|endoftext|> ...``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(vocab_size, int) or vocab_size < BPE_MIN_VOCAB:
        raise UserError(f"vocab_size must be an integer >= {BPE_MIN_VOCAB} for a byte-level BPE (the 256 bytes "
                        f"and {len(BPE_SPECIAL_TOKENS)} special tokens), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=BPE_SPECIAL_TOKENS, show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # Renumber: special tokens, the byte alphabet, then each merge's result in merge order.
    state = json.loads(tok.to_str())
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    order = BPE_SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
    for a, b in merges:
        if a + b not in order:
            order.append(a + b)
    order += sorted(set(state["model"]["vocab"]) - set(order))  # none expected; kept rather than lost
    tok.model = models.BPE({t: i for i, t in enumerate(order)}, merges, fuse_unk=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, model_max_length=MODEL_MAX_LENGTH,
                                   clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True,
                    out_dir: str | Path | None = None, *, causal: bool = False):
    """The tokenizer an objective trains with: a byte-level BPE for a causal LM (cased whatever
    ``lowercase`` says: the decoder convention), else BERT's WordPiece."""
    if causal:
        return train_bpe(texts, vocab_size, out_dir)
    return train_wordpiece(texts, vocab_size, lowercase, out_dir)


def end_token_id(tokenizer) -> int | None:
    """The id that ends a document in a causal LM's packed rows: the EOS token, else ``[SEP]``
    (a BERT tokenizer given to a causal arm)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return eos if eos is not None else getattr(tokenizer, "sep_token_id", None)


def load_tokenizer(path: str | Path, *, causal: bool = False):
    """Load a saved tokenizer folder with ``AutoTokenizer`` and check it can do MLM (or, ``causal``,
    next-token prediction: it needs an end-of-document token, EOS or SEP).

    Args:
        path: a folder written by ``save_pretrained`` (holding ``tokenizer.json`` or a
            ``tokenizer_config.json`` with vocabulary files).

    Raises:
        UserError: the folder is missing, holds no tokenizer, or the tokenizer lacks one of
            the special tokens MLM pretraining needs (mask, cls, sep, pad).
    """
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"tokenizer folder not found: {path}; pass a folder written by save_pretrained")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise UserError(f"no tokenizer in {path} (no tokenizer.json or tokenizer_config.json); "
                        "pass a folder written by save_pretrained")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # transformers raises OSError/ValueError/KeyError here
        raise UserError(f"cannot load the tokenizer in {path} ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    if causal:
        if end_token_id(tok) is None:
            raise UserError(f"the tokenizer in {path} has no eos_token (nor sep_token); causal-LM pretraining "
                            "needs one to end each document")
        return tok
    for name in ("mask_token", "cls_token", "sep_token", "pad_token"):
        if getattr(tok, f"{name}_id", None) is None:
            raise UserError(f"the tokenizer in {path} has no {name}; MLM pretraining needs "
                            "mask, cls, sep and pad tokens")
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest of what decides token ids: vocabulary, normalizer, pre-tokenizer, added tokens.

    Padding/truncation settings are left out, so the digest is the same before and after a
    ``save_pretrained`` / ``from_pretrained`` round trip.
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    for key in ("truncation", "padding", "post_processor", "decoder"):
        state.pop(key, None)
    blob = json.dumps(state, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
