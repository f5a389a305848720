"""Model presets by name: plain data, no torch, so the command line's ``--help`` can list them
without importing a model library (:mod:`pldrop.models` builds them; arms are :mod:`pldrop.arms`)."""

# (layers, hidden, heads); intermediate = 4 * hidden as in BERT.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 64, 2),  # tests
    "narrow": (12, 128, 2),  # 12 blocks, like BERT-base in depth
    "narrow8": (8, 128, 2),  # the `pldrop compare` default: 1.6x the steps of narrow in a time budget
    "mini": (4, 256, 4),  # BERT-mini
    "small": (4, 512, 8),  # BERT-small
    "medium": (8, 512, 8),  # BERT-medium
    "base": (12, 768, 12),  # BERT-base, the paper's model
}
