"""Texts to token ids: the base model's tokenizer and the token cap, nothing else.

The engine holds one (`Engine.text`); an API process in front of an engine process
(app.procs) holds its own, built from the same tokenizer and the engine's `max_length`, so
both give the same ids. `app.serving.tokenizing.Tokenizer` calls `tokenize` on its thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.serving.errors import TextTooLong
from app.serving.text_limits import char_cap

Text = str | tuple[str, str]  # one input: a text, or a sentence pair (text, text_pair)


class TextEncoder:
    """`tokenize` under the cap; call it from one thread at a time (the fast tokenizer is not
    re-entrant)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.char_cap = char_cap(tokenizer, max_length)
        # The tokenizer warns once per over-long text; we check lengths ourselves.
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = (
            True
        )

    def tokenize(
        self, texts: Sequence[Text], *, truncation: bool = True, first: int = 0
    ) -> list[list[int]]:
        """Token ids per input (with special tokens); TextTooLong when over the limit.

        An input is a text or a pair (text, text_pair), encoded as the model's pair input;
        both kinds may mix in one call. With truncation, texts are first cut to `char_cap`
        characters (`_cut`): more than `max_length` tokens can cover, so the ids are the same
        and the work is bounded. `first` is the index of `texts[0]` in its request (for error
        messages).
        """
        if truncation:
            texts = [self._cut(t) for t in texts]
        encoded = self.tokenizer(
            list(texts),
            truncation=truncation,
            max_length=self.max_length if truncation else None,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        if not truncation:
            for index, ids in enumerate(encoded, start=first):
                if len(ids) > self.max_length:
                    raise TextTooLong(
                        f"inputs[{index}] has {len(ids)} tokens; the limit is {self.max_length} "
                        "(send truncation: true to cut it)"
                    )
        return encoded

    def _cut(self, item: Text) -> Text:
        """`item` cut to what truncation keeps of it. A pair is truncated longest first: when
        both texts are long, which side keeps the odd token depends on their full lengths, so
        a text of a pair is cut only when the other surely holds fewer tokens than the cut one
        (at most max_length + 2 UTF-8 bytes: a token is at least a byte)."""
        if isinstance(item, str):
            return item[: self.char_cap]
        text, pair = item
        if len(pair.encode()) <= self.max_length + 2:
            text = text[: self.char_cap]
        elif len(text.encode()) <= self.max_length + 2:
            pair = pair[: self.char_cap]
        return (text, pair)
