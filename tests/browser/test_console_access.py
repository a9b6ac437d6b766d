"""The console with a key limited to `team-a/*`, in headless Chromium: the adapters table lists
only that namespace, and its buttons reach namespaced adapters (load, download, delete)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from adapters_store import AdapterStore
from tests.browser.pages import all_css, by_css, enter_key, text_of, wait_for
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
TEAM_KEY = "team-a-key-browser-0123456789abcdef"
ALL_KEY = "all-key-browser-0123456789abcdefghij"
KEYS_FILE = f"{TEAM_KEY} admin+classify+download adapters=team-a/*\n{ALL_KEY} admin+classify\n"
ROW = "#adapters-body tr[data-name='{}']"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("access-console")
    store = AdapterStore(data / "adapters")
    for seed, name in enumerate(["alpha", "team-a/sentiment", "team-a/topic", "team-b/x"]):
        factory.add_to_store(store, name, seed=seed)
    (data / "keys.txt").write_text(KEYS_FILE)
    env = {"APP_EMBEDDED_WORKER": "false", "APP_API_KEYS_FILE": str(data / "keys.txt")}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as srv:
        yield srv


def _info(server: Server, name: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ALL_KEY}"}
    return httpx.get(f"{server.url}/adapters/{name}", headers=headers, timeout=30)


def test_the_console_shows_and_acts_on_the_keys_namespace_only(browser, server):
    browser.get(f"{server.url}/?tab=adapters")
    enter_key(browser, TEAM_KEY)
    wait_for(browser, lambda d: all_css(d, ROW.format("team-a/topic")), message="team-a rows")
    names = [row.get_attribute("data-name") for row in all_css(browser, "#adapters-body tr")]
    assert names == ["team-a/sentiment", "team-a/topic"]

    by_css(browser, "button[data-action=load][data-name='team-a/sentiment']").click()
    wait_for(browser, lambda d: "team-a/sentiment loaded" in text_of(d, "#adapters-status"))
    assert _info(server, "team-a/sentiment").json()["resident"] is True

    by_css(browser, "button[data-action=download][data-name='team-a/topic']").click()
    wait_for(browser, lambda d: "Downloaded team-a/topic" in text_of(d, "#adapters-status"))
    wait_for(browser, lambda d: list(browser.download_dir.glob("team-a~topic*.zip")))

    by_css(browser, "button[data-action=delete][data-name='team-a/topic']").click()
    by_css(browser, "button[data-action=confirm-delete][data-name='team-a/topic']").click()
    wait_for(browser, lambda d: "Deleted team-a/topic" in text_of(d, "#adapters-status"))
    assert _info(server, "team-a/topic").status_code == 404
    assert _info(server, "team-b/x").status_code == 200
