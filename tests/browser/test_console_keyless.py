"""A keyless server on 127.0.0.1 in headless Chromium: its own console changes things, a page
of another site (here http://localhost:PORT, another origin) cannot."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from adapters_store import AdapterStore
from tests.browser.pages import all_css, by_css, text_of, wait_for
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ENV = {"APP_EMBEDDED_WORKER": "false", "APP_LOG_LEVEL": "warning"}


@pytest.fixture(scope="module")
def keyless(tmp_path_factory, tiny_model_dir, factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("keyless-console")
    factory.add_to_store(AdapterStore(data / "adapters"), "alpha", seed=1)
    with running_server(data_dir=data, base_model=tiny_model_dir, env=ENV) as server:
        yield server


def _resident(server: Server, name: str) -> bool:
    return httpx.get(f"{server.url}/adapters/{name}").json()["resident"]


FETCH = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {method: "POST", mode: arguments[1]})
  .then(r => done(r.type === "opaque" ? "opaque" : r.status), e => done("error " + e));
"""


def test_a_page_of_another_site_cannot_change_anything(browser, keyless):
    target = f"{keyless.url}/adapters/alpha/load"
    browser.get(f"http://localhost:{keyless.port}/healthz")  # another origin than 127.0.0.1
    assert browser.execute_async_script(FETCH, target, "no-cors") in ("opaque", 403)
    assert not _resident(keyless, "alpha")
    browser.get(f"{keyless.url}/healthz")  # the server's own origin
    assert browser.execute_async_script(FETCH, target, "same-origin") == 200
    assert _resident(keyless, "alpha")


def test_the_console_uploads_without_a_key(browser, keyless, factory, tmp_path):
    archive = factory.archive("fresh", tmp_path / "fresh.zip", seed=4)
    browser.get(f"{keyless.url}/?tab=adapters")
    wait_for(browser, lambda d: all_css(d, "#adapters-body tr[data-name=alpha]"))
    by_css(browser, "#upload-file").send_keys(str(archive))
    by_css(browser, "#upload-button").click()
    wait_for(browser, lambda d: "Uploaded fresh" in text_of(d, "#upload-status"))
    assert httpx.get(f"{keyless.url}/adapters/fresh").status_code == 200
