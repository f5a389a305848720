import pytest

from pldrop.data.local import read_txt
from pldrop.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_wordpiece
from pldrop.errors import UserError

SAMPLE = "The Elephant's trunk is long; it drinks 200 litres of water a day. Ünïcode café!"


def test_saved_tokenizer_round_trips_through_auto_tokenizer(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tok = tiny_tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tok) == 600
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(SAMPLE)["input_ids"] == tok(SAMPLE)["input_ids"]
    pair = loaded("a question", "an answer")
    assert pair["input_ids"][0] == tok.cls_token_id and pair["token_type_ids"][-1] == 1
    assert (loaded.mask_token_id, loaded.pad_token_id, loaded.cls_token_id, loaded.sep_token_id) == (4, 0, 2, 3)
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    assert load_tokenizer(tmp_path)(SAMPLE)["input_ids"] == tok(SAMPLE)["input_ids"]
    assert tok.tokenize("WATER")[0] == "water"  # uncased by default


def test_cased_tokenizer_keeps_case_after_reload(tiny_corpus, tmp_path):
    tok = train_wordpiece(read_txt(tiny_corpus), vocab_size=300, lowercase=False, out_dir=tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.tokenize("Water water") == tok.tokenize("Water water")
    assert loaded.tokenize("Water water")[0] != loaded.tokenize("Water water")[1]
    assert tokenizer_fingerprint(loaded) != tokenizer_fingerprint(
        train_wordpiece(read_txt(tiny_corpus), vocab_size=300, lowercase=True))


def test_load_tokenizer_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer folder not found: .*missing"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(UserError, match=rf"no tokenizer in {tmp_path}"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="vocab_size must be an integer >= 32"):
        train_wordpiece(["x"], vocab_size=5)


def test_vocabulary_is_numbered_in_a_fixed_order(tmp_path):
    """Specials 0..4, then the rest sorted: the same vocabulary always gets the same ids.

    (The trainer breaks frequency ties at the vocabulary cut-off in no fixed order, so two
    trainings can still differ by a token there; the run folder keeps the tokenizer it used.)"""
    from pathlib import Path

    from pldrop.data.tokenizer import SPECIAL_TOKENS, train_wordpiece

    text = (Path(__file__).parents[1] / "fixtures" / "corpus" / "tiny.txt").read_text().split("\n\n")
    vocab = train_wordpiece(text, vocab_size=300, out_dir=tmp_path).get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:5] == SPECIAL_TOKENS
    assert ordered[5:] == sorted(ordered[5:])


def test_byte_level_bpe_is_cased_lossless_and_numbered_by_its_merges(tiny_corpus, tmp_path):
    """The causal-LM tokenizer: specials, the 256 bytes sorted, then merges in order; any text round-trips."""
    from tokenizers import pre_tokenizers

    from pldrop.data.tokenizer import BPE_SPECIAL_TOKENS, EOS_TOKEN, train_bpe, train_tokenizer

    tok = train_bpe(read_txt(tiny_corpus), vocab_size=300, out_dir=tmp_path)
    ordered = sorted(tok.get_vocab(), key=tok.get_vocab().get)
    assert ordered[:2] == BPE_SPECIAL_TOKENS and ordered[2:258] == sorted(pre_tokenizers.ByteLevel.alphabet())
    loaded = load_tokenizer(tmp_path, causal=True)
    assert loaded.eos_token == loaded.bos_token == EOS_TOKEN and loaded.unk_token is None
    assert loaded.decode(loaded(SAMPLE)["input_ids"]) == SAMPLE and loaded.tokenize("Water")[0][0] == "W"
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(train_tokenizer(read_txt(tiny_corpus), 300, causal=True)) == \
        tokenizer_fingerprint(tok)  # the same ids on every training
    with pytest.raises(UserError, match="mask_token"):  # no [MASK]: not for a masked LM
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match=r"vocab_size must be an integer >= 258 for a byte-level BPE"):
        train_bpe(["x"], vocab_size=200)
