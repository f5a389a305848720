"""Tiny HF models of several families, built from configs (no download)."""

import pytest
import torch


def tiny_models():
    """(name, constructor) pairs of tiny HF models from several families (no download)."""
    import transformers as T

    common = dict(vocab_size=99, hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=3)
    return {
        "bert": lambda: T.BertForMaskedLM(T.BertConfig(**common)),
        "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**common)),
        "roberta-prelayernorm": lambda: T.RobertaPreLayerNormForMaskedLM(T.RobertaPreLayerNormConfig(**common)),
        "distilbert": lambda: T.DistilBertForMaskedLM(
            T.DistilBertConfig(vocab_size=99, dim=32, n_heads=2, hidden_dim=37, n_layers=3)
        ),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=99, n_embd=32, n_head=2, n_layer=3, n_positions=64)),
        "llama": lambda: T.LlamaForCausalLM(
            T.LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=64)
        ),
        "electra": lambda: T.ElectraForMaskedLM(T.ElectraConfig(**common, embedding_size=32)),
        "mistral": lambda: T.MistralForCausalLM(
            T.MistralConfig(**common, num_key_value_heads=1, max_position_embeddings=64)
        ),
        "deberta-v2": lambda: T.DebertaV2ForMaskedLM(T.DebertaV2Config(**common)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**common, num_key_value_heads=1)),
        "phi": lambda: T.PhiForCausalLM(T.PhiConfig(**common)),
        "gpt-neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**common)),
        "bloom": lambda: T.BloomForCausalLM(T.BloomConfig(vocab_size=99, hidden_size=32, n_head=2, n_layer=3)),
        "opt": lambda: T.OPTForCausalLM(
            T.OPTConfig(vocab_size=99, hidden_size=32, num_attention_heads=2, ffn_dim=37, num_hidden_layers=3,
                        word_embed_proj_dim=32, max_position_embeddings=64)
        ),
    }


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (2, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
