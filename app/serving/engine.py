"""The inference engine: one frozen base model + tokenizer, adapters loaded by name. No HTTP.

The engine owns the model; every method that touches it (load, unload, forward) must be called
from ONE thread (the batcher's inference thread). `tokenize` only uses the tokenizer and must
also be called from one thread at a time (the fast tokenizer is not re-entrant).

A forward over several adapters runs the body once per group of compatible adapters and then
applies each adapter's head to its own slice of the batch (DESIGN §4,
docs/serving-mixed-methods.md). Every adapter the one-pass path covers (app.serving.onepass:
bottleneck, LoRA, IA3, prefix tuning) shares ONE body pass whatever their number and methods,
with stacked weights; the others run one `BatchSplit` per group (same method and wiring, see
split_groups.py).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters_store import BaseModelRef
from adapters_store.fingerprint import fingerprint_model, is_base_parameter
from app.serving.errors import BaseModelLoadError
from app.serving.modules import AdapterModules, module_name
from app.serving.onepass.support import ONEPASS_KEY
from app.serving.split_groups import Compat, compat_of, plan_pieces
from app.serving.text_encoding import Text, TextEncoder
from app.serving.text_limits import model_limit

__all__ = ["Engine", "Segment", "Text", "choose_device", "choose_dtype", "module_name"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """Consecutive rows of one forward pass that use the same adapter."""

    adapter: str
    ids: list[list[int]]


def choose_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def choose_dtype(requested: str, device: str) -> Any:
    """fp16/bf16 only on CUDA (auto = bf16 when supported, else fp16); CPU is always fp32."""
    import torch

    if not device.startswith("cuda"):
        if requested not in ("auto", "float32"):
            log.warning("APP_DTYPE=%s ignored on %s: using float32", requested, device)
        return torch.float32
    if requested == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, requested)


def _load_error(base_model: str, exc: BaseException) -> BaseModelLoadError:
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return BaseModelLoadError(
        f"cannot load base model {base_model!r} ({reason}). Set APP_BASE_MODEL to a local "
        "directory holding the model's config.json, weights and tokenizer (e.g. one written by "
        "save_pretrained), or run where the Hugging Face hub is reachable."
    )


def unchunked_feed_forward(model: Any) -> None:
    """Each encoder layer calls transformers' `apply_chunking_to_forward` for its feed-forward
    part, and that builds `inspect.signature` of the layer's method on every call (~10 us a
    layer a pass) before it calls it whole when the chunk size is 0 (the default). Where every
    layer's chunk size is 0, the layers' module gets the direct call instead. The same result
    (it returns `forward_fn(*inputs)` either way); a model with chunking keeps the original."""
    layers = [m for m in model.modules() if hasattr(m, "chunk_size_feed_forward")]
    if not layers or any(layer.chunk_size_feed_forward for layer in layers):
        return
    for cls in {type(layer) for layer in layers}:
        names = inspect.unwrap(cls.forward).__globals__  # the module that defines the forward
        if "apply_chunking_to_forward" in names:
            names["apply_chunking_to_forward"] = _unchunked


def _unchunked(forward_fn: Any, chunk_size: int, chunk_dim: int, *inputs: Any) -> Any:
    if chunk_size:  # another model of the same class in this process chunks
        from transformers.pytorch_utils import apply_chunking_to_forward

        return apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, *inputs)
    return forward_fn(*inputs)


class Engine(AdapterModules):
    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        base_ref: BaseModelRef,
        max_length: int,
        onepass: bool = True,
    ):
        import torch

        from app.serving.onepass.runner import OnePass, supported_model

        self.model = model
        self.base_config = model.config
        self.tokenizer = tokenizer
        self.base_ref = base_ref
        self.max_length = max_length
        first = next(model.parameters())
        self.device = first.device
        self.dtype = first.dtype
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._torch = torch
        self._compats: dict[str, Compat] = {}  # module name -> how it batches, while loaded
        # Stacked weights + hooks for the adapters the one-pass path covers (None: off).
        self._onepass = OnePass(model) if onepass and supported_model(model) else None
        self._init_modules()
        self.text = TextEncoder(tokenizer, max_length)  # what tokenising needs, alone
        unchunked_feed_forward(model)

    @classmethod
    def load(
        cls,
        *,
        base_model: str,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 512,
        threads: int | None = None,
        onepass: bool = True,
    ) -> Engine:
        """Load the base model once; raise BaseModelLoadError with a one-line reason.

        `threads` sets torch's intra-op threads for the process (None: torch's default);
        `onepass` False runs every adapter through the library's BatchSplit (for comparison).
        """
        import torch
        from adapters import AutoAdapterModel
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        logging.getLogger("adapters").setLevel(logging.ERROR)  # per-forward warnings
        try:
            tokenizer = AutoTokenizer.from_pretrained(base_model)
            model = AutoAdapterModel.from_pretrained(base_model)
        except Exception as exc:  # OSError, ValueError, HF errors: all mean "cannot load"
            raise _load_error(base_model, exc) from None
        model.eval()
        config = model.config
        base_config = copy.deepcopy(config)  # before any adapter: for compatibility probes
        base_ref = BaseModelRef(
            id=str(base_model),
            fingerprint=fingerprint_model(model),  # on the float32 weights, before any cast
            model_type=getattr(config, "model_type", None),
            hidden_size=getattr(config, "hidden_size", None),
        )
        target = choose_device(device)
        model.to(device=target, dtype=choose_dtype(dtype, target))
        limit = min(max_length, model_limit(tokenizer, config))
        engine = cls(
            model=model, tokenizer=tokenizer, base_ref=base_ref, max_length=limit, onepass=onepass
        )
        engine.base_config = base_config
        return engine

    # ---- tokenisation (tokenizer thread) -------------------------------------------------
    def tokenize(
        self, texts: Sequence[Text], *, truncation: bool = True, first: int = 0
    ) -> list[list[int]]:
        """Token ids per input (`TextEncoder.tokenize`); TextTooLong when over the limit."""
        return self.text.tokenize(texts, truncation=truncation, first=first)

    @property
    def char_cap(self) -> int:
        return self.text.char_cap

    def base_state(self) -> dict[str, Any]:
        """The base model's tensors (adapters and heads excluded), for integrity checks."""
        return {k: v for k, v in self.model.state_dict().items() if is_base_parameter(k)}

    # ---- inference (inference thread) ----------------------------------------------------
    def between_layers(self, hook: Callable[[], None] | None) -> None:
        """Call `hook` at each stop of a one-pass body (before an encoder layer or its
        feed-forward part; None: nothing); it may run a `nestable` forward there
        (`app.serving.preempt`)."""
        if self._onepass is not None:
            self._onepass.between = hook

    def nestable(self, adapters: Sequence[str]) -> bool:
        """Whether a forward of these adapters' rows may run between the layers of another:
        all on the one-pass path, their rows stacked already (it writes nothing there)."""
        onepass = self._onepass
        if onepass is None:
            return False
        modules = [self.module_of(name) for name in adapters]
        return all(onepass.ready(m) and self._compat(m).key == ONEPASS_KEY for m in modules)

    def forward(self, segments: Sequence[Segment]) -> list[list[list[float]]]:
        """Raw logits per segment and row, in the order of `segments` (adapters_store.rendering
        turns them into each task's scores).

        Rows whose adapters can share a BatchSplit run in one body pass; each group of
        compatible adapters gets its own (split_groups.py), so any mix of methods is exact.
        """
        compats = [self._compat(self.module_of(seg.adapter)) for seg in segments]
        plan = plan_pieces(compats, [[len(ids) for ids in seg.ids] for seg in segments])
        out: list[list[Any]] = [[None] * len(seg.ids) for seg in segments]
        with self._torch.inference_mode():
            for group in plan:
                parts = [_part(segments[p.segment], p.rows) for p in group]
                for piece, probs in zip(group, self._forward_group(parts), strict=True):
                    for row, row_probs in zip(piece.rows, probs, strict=True):
                        out[piece.segment][row] = row_probs
        return out

    def _forward_group(self, segments: Sequence[Segment]) -> list[list[list[float]]]:
        """One body pass (stacked weights, or a BatchSplit when several adapters), then each
        head on its slice: its logits, in float32. The one-pass path runs the segments in its
        own order (`OnePass.order`); the results come back in theirs."""
        names = [self.module_of(seg.adapter) for seg in segments]
        onepass = self._onepass is not None and self._compat(names[0]).key == ONEPASS_KEY
        order = self._onepass.order(names) if onepass else list(range(len(segments)))
        names = [names[i] for i in order]
        sizes = [len(segments[i].ids) for i in order]
        input_ids, mask = self._pad([ids for i in order for ids in segments[i].ids])
        logits = None
        if onepass:
            body = self._onepass.body(names, sizes, input_ids, mask)
            logits = self._onepass.heads(body, names, sizes)
        else:
            body = self._library_body(names, sizes, input_ids, mask)
        if logits is None:
            logits, start = [], 0
            for name, size in zip(names, sizes, strict=True):
                rows = slice(start, start + size)
                logits.append(self._head(body, mask, name, rows).float().cpu().tolist())
                start += size
        out: list[Any] = [None] * len(order)
        for position, index in enumerate(order):
            out[index] = logits[position]
        return out

    def _library_body(self, names: list[str], sizes: list[int], input_ids: Any, mask: Any):
        from adapters import AdapterSetup
        from adapters.composition import BatchSplit

        setup = names[0] if len(names) == 1 else BatchSplit(*names, batch_sizes=sizes)
        with AdapterSetup(setup):
            return self.model.base_model(input_ids=input_ids, attention_mask=mask, return_dict=True)

    def _compat(self, slot: str) -> Compat:
        compat = self._compats.get(slot)
        if compat is None:
            config = self.model.adapters_config.get(slot)
            config = config.to_dict() if hasattr(config, "to_dict") else config
            compat = compat_of(slot, config, onepass=self._onepass is not None)
            self._compats[slot] = compat
        return compat

    def _head(self, body: Any, mask: Any, name: str, rows: slice) -> Any:
        torch = self._torch
        part = body.__class__(**{k: v[rows] for k, v in body.items() if torch.is_tensor(v)})
        pooled = body.get("pooler_output")
        return self.model.forward_head(
            part,
            head_name=name,
            attention_mask=mask[rows],
            return_dict=True,
            pooled_output=pooled[rows] if pooled is not None else None,
        ).logits

    def _pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        """Token ids padded to the longest row, and the attention mask: two tensors made at
        once (a copy per row costs a few operators each, per row)."""
        torch = self._torch
        lengths = [len(r) for r in rows]
        width, pad = max(lengths), self._pad_id
        padded = [r + [pad] * (width - len(r)) for r in rows]
        input_ids = torch.tensor(padded, dtype=torch.long)
        mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
        return input_ids.to(self.device), mask.to(self.device)


def _part(segment: Segment, rows: Sequence[int]) -> Segment:
    if len(rows) == len(segment.ids):
        return segment
    return Segment(segment.adapter, [segment.ids[r] for r in rows])
