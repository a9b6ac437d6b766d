"""A tiny random RoBERTa and an easy keyword task, built in seconds for tests.

Nothing here downloads: the tokenizer is trained with `tokenizers` on generated text and the
model is a small `RobertaConfig` with random weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "excellent", "lovely", "superb", "wonderful"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "dreadful", "horrible"]
FILLER = (
    "the a this that movie film book phone product story plot acting sound screen battery "
    "service price quality it was is very quite rather really and but with for of to in on "
    "my our their some every day night time one two three team show song album game"
).split()
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def keyword_example(rng: random.Random) -> dict:
    """One labelled sentence: label 1 iff it holds a positive keyword (never both kinds)."""
    label = rng.randint(0, 1)
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))]
    words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
    return {"text": " ".join(words), "label": label}


def keyword_dataset(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [keyword_example(rng) for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def build_tiny_roberta(out_dir: Path, *, seed: int = 0, max_length: int = 128) -> Path:
    """Write a random RoBERTa (hidden 32, 2 layers) and its BPE tokenizer to `out_dir`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    corpus = [keyword_example(rng)["text"] for _ in range(2000)]
    corpus += [" ".join(POSITIVE + NEGATIVE + FILLER)] * 5
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=600, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(out_dir))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(out_dir / "vocab.json"),
        merges_file=str(out_dir / "merges.txt"),
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    RobertaModel(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
