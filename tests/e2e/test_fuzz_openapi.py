"""Property-based fuzzing of the real server from its own OpenAPI schema (schemathesis).

Bounded: a fixed number of examples per operation, a fixed seed, a per-request timeout. The
only check is the one that matters here: no response is a 5xx, whatever a client sends.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from adapters_store import AdapterStore
from tests.support.adapters import AdapterFactory
from tests.support.server import running_server

MAX_EXAMPLES = 30


@pytest.mark.timeout(420)
def test_no_server_errors_for_generated_requests(tmp_path, tiny_model_dir):
    if shutil.which("st", path=str(sys.executable).rsplit("/", 1)[0]) is None:
        pytest.fail("schemathesis CLI 'st' is not installed in this environment")
    data = tmp_path / "data"
    store = AdapterStore(data / "adapters")
    factory = AdapterFactory(tiny_model_dir)
    # "amazon-polarity" is the name in the schema's example, so examples reach the model.
    for i, name in enumerate(["amazon-polarity", "beta"]):
        factory.add_to_store(store, name, seed=i)
    env = {"APP_EMBEDDED_WORKER": "false", "APP_MAX_INPUTS_PER_REQUEST": "16"}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        st = str(sys.executable).rsplit("/", 1)[0] + "/st"
        result = subprocess.run(
            [
                st,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "7",
                "--request-timeout",
                "20",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            cwd=tmp_path,
        )
        output = result.stdout + result.stderr
        assert server.alive(), "server died during fuzzing:\n" + server.logs()[-3000:]
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output.lower() or "no issues" in output.lower(), output[-3000:]
