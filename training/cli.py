"""`python -m training train|eval|predict|export|push|pull` (also `adapter-train`).

Bad input (missing file, unknown column, labels that do not fit, taken name, ...) prints one
line `error: ...` on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters_store import StoreError
from adapters_store.methods import METHOD_NAMES
from training.config import TrainConfig
from training.errors import TrainingCancelled, TrainingError

EXIT_BAD_INPUT = 2
_RECIPE_FIELDS = {
    "max_length", "num_epochs", "min_steps", "batch_size", "eval_batch_size", "warmup_ratio",
    "lr_scheduler", "weight_decay", "eval_steps", "early_stopping_patience", "logging_steps",
    "group_by_length",
}  # fmt: skip
_REQUIRED = {"name", "dataset"}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; only flags given are passed on (defaults stay there)."""
    for field, info in TrainConfig.model_fields.items():
        kwargs: dict[str, Any] = {"dest": field, "help": _help(field, info.default)}
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if _is_optional(annotation) and args else annotation
        if inner is bool:  # a None-able one (the recipe decides) also takes --no-FLAG
            optional = _is_optional(annotation)
            kwargs["action"] = argparse.BooleanOptionalAction if optional else "store_true"
        elif typing.get_origin(inner) is list:
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "LABEL"
        elif typing.get_origin(inner) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(inner))
        else:
            kwargs["type"] = inner
        kwargs["required"] = field in _REQUIRED
        if field not in _REQUIRED:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(_flag(field), **kwargs)


def _is_optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _help(field: str, default: Any) -> str:
    if field == "eval_split":
        return (
            "a named split, a local file, or 'none' to hold out --eval-fraction (default: test; "
            "data without a test split holds out --eval-fraction)"
        )
    if field == "adapter_config":
        return f"{', '.join(METHOD_NAMES)}, or a JSON object"
    if field == "learning_rate":
        return "default: the recipe's, per method (seq_bn 1e-3, lora 1e-3, ia3 3e-3, ...)"
    if field == "task":
        return (
            "default: inferred from the label column (lists: multi_label, fractional "
            "numbers: regression, else single_label)"
        )
    if field == "text_pair_column":
        return "a second text column: train on sentence pairs (text, text_pair)"
    if field == "recipe":
        return (
            "default: the task's (single_label, multi_label, pairs or regression; per method), "
            "or article (AdapterHub's notebook exactly)"
        )
    if field in _RECIPE_FIELDS:
        return "default: the recipe's"
    return "" if default is None or field in _REQUIRED else f"default: {default}"


def build_parser(
    prog: str = "python -m training", version: str | None = None
) -> argparse.ArgumentParser:
    from training.pull import add_parser as add_pull

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    if version is not None:
        parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an adapter (or fully fine-tune) and store it")
    _add_config_flags(train)
    train.add_argument("--store", required=True, type=Path, help="adapter store directory")
    train.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.add_argument(
        "--plot", "--curves-png", dest="plot", type=Path, default=None, metavar="PATH",
        help="also write the learning-curve PNG here (it is always stored beside the adapter "
        "as learning_curves.png, and exported with it)",
    )  # fmt: skip

    ev = sub.add_parser("eval", help="evaluate a stored adapter on a dataset split")
    ev.add_argument("name")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--split", default=None, help="default: test (a single file: the file)")
    ev.add_argument("--dataset-config", default=None)
    ev.add_argument("--text-column", default=None, help="default: the training column")
    ev.add_argument("--label-column", default=None, help="default: the training column")
    ev.add_argument("--text-pair-column", default=None, help="default: the training column")
    ev.add_argument("--max-samples", type=int, default=None)
    ev.add_argument("--batch-size", type=int, default=32)
    _add_model_flags(ev)

    pr = sub.add_parser("predict", help="classify texts with a stored adapter (JSON lines)")
    pr.add_argument("name")
    pr.add_argument("texts", nargs="+", metavar="TEXT")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument(
        "--pair",
        nargs="+",
        default=None,
        metavar="TEXT_PAIR",
        help="the second text of each input (sentence-pair adapters)",
    )
    _add_model_flags(pr)

    ex = sub.add_parser("export", help="write a hub-ready folder with a model card")
    ex.add_argument("name")
    ex.add_argument("--out", required=True, type=Path)
    ex.add_argument("--store", required=True, type=Path)
    ex.add_argument("--overwrite", action="store_true")

    push = sub.add_parser("push", help="upload the exported folder to the Hugging Face hub")
    push.add_argument("name")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--token", default=None)
    push.add_argument("--private", action="store_true")
    push.add_argument("--store", required=True, type=Path)
    add_pull(sub)
    return parser


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--base-model", default=None, help="default: the manifest's base model")
    parser.add_argument("--device", default=None)


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "python -m training",
    version: str | None = None,
) -> int:
    args = build_parser(prog, version).parse_args(argv)
    from training import commands
    from training.pull import pull

    handlers = {
        "train": commands.train,
        "eval": commands.evaluate,
        "predict": commands.predict,
        "export": commands.export,
        "push": commands.push,
        "pull": pull,
    }
    try:
        return handlers[args.command](args)
    except ValidationError as exc:
        return _fail(_validation_message(exc))
    except TrainingCancelled as exc:
        return _fail(str(exc), status=130)
    except (TrainingError, StoreError) as exc:
        return _fail(exc.message)
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)


def _fail(message: str, *, status: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if isinstance(p, str)]
        where = _flag(loc[0]) + ": " if loc else ""
        parts.append(where + error["msg"].removeprefix("Value error, "))
    return "; ".join(parts)
