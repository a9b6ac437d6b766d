"""How long a text may be: the model's token limit, and the characters that surely hold it.

The engine cuts texts to `char_cap` characters before tokenising (the ids stay the same and the
tokenizer's work is bounded) and caps `max_length` at `model_limit`.
"""

from __future__ import annotations

from typing import Any


def char_cap(tokenizer: Any, max_length: int) -> int:
    """Characters that surely hold a text's first `max_length` tokens, with a 2x margin.

    A token covers at most as many characters as its vocabulary string (byte-level BPE and
    WordPiece alike); WordPiece also maps a word of up to `max_input_chars_per_word` unknown
    characters to one [UNK]. Only a text of giant unknown words (thousands of characters with
    no space, each one token) can lose tokens to the cut.
    """
    longest = max(map(len, tokenizer.get_vocab()), default=32)
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    word = getattr(backend, "max_input_chars_per_word", 0) or 0
    return 2 * (max_length + 2) * max(longest, word, 1)


def model_limit(tokenizer: Any, config: Any) -> int:
    """The longest input the model accepts (tokenizer cap, else position embeddings)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    positions = getattr(config, "max_position_embeddings", 512)
    # RoBERTa-style models offset positions by padding_idx + 1.
    return (
        positions - 2
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta")
        else positions
    )
