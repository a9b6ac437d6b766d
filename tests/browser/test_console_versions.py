"""The console's versions card in headless Chromium against a real server with keys: it shows
the versions kept, their aliases and traffic shares, moves an alias and clears the split, and
the next classify request follows."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from adapters_store import AdapterStore
from tests.browser.conftest import ADMIN, KEYS, READER
from tests.browser.pages import all_css, by_css, text_of, wait_for
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ENV = {"APP_EMBEDDED_WORKER": "false", "APP_LOG_LEVEL": "warning", "APP_API_KEYS": KEYS}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("versions-console")
    store = AdapterStore(data / "adapters")
    for seed in (1, 2, 3):
        factory.add_to_store(store, "demo", seed=seed, overwrite=True)
    with running_server(data_dir=data, base_model=tiny_model_dir, env=ENV) as running:
        yield running


@pytest.fixture
def admin(server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def _open(driver, server: Server, key: str) -> None:
    driver.get(server.url + "/healthz")
    driver.execute_script("sessionStorage.setItem('adapter-serve.api-key', arguments[0])", key)
    driver.get(server.url + "/?tab=adapters")
    wait_for(driver, lambda d: all_css(d, "#adapters-body tr[data-name=demo]"))


def _rows(driver) -> dict[str, tuple[str, str]]:
    """version -> (aliases, share) as the versions table shows them."""
    return {
        row.get_attribute("data-version"): (
            row.find_element("css selector", ".col-aliases").text,
            row.find_element("css selector", ".col-share").text,
        )
        for row in all_css(driver, "#versions-body tr")
    }


def _version(admin: httpx.Client, adapter: str) -> int:
    r = admin.post("/classify", json={"adapter": adapter, "inputs": "a text"})
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_versions_card_moves_an_alias_and_clears_the_split(browser, server, admin):
    from selenium.webdriver.support.ui import Select

    assert admin.put("/adapters/demo/aliases/prod", json={"version": 2}).status_code == 200
    split = admin.put("/adapters/demo/split", json={"weights": {"prod": 90, "3": 10}})
    assert split.status_code == 200
    _open(browser, server, ADMIN)
    by_css(browser, "button[data-action=versions][data-name=demo]").click()
    wait_for(browser, lambda d: len(_rows(d)) == 3, message="three versions")
    assert _rows(browser) == {"3": ("", "10%"), "2": ("prod", "90%"), "1": ("", "0%")}
    assert "prod (v2) 90%" in text_of(browser, "#versions-split")

    field = by_css(browser, "#alias-name")
    field.clear()
    field.send_keys("prod")
    Select(by_css(browser, "#alias-version")).select_by_value("1")
    by_css(browser, "#alias-button").click()
    wait_for(browser, lambda d: "Moved prod from v2 to v1" in text_of(d, "#versions-status"))
    assert _rows(browser)["1"] == ("prod", "90%")
    assert admin.get("/adapters/demo/versions").json()["aliases"] == {"prod": 1}
    assert _version(admin, "demo@prod") == 1  # the next request follows the move

    by_css(browser, "#versions-clear-split").click()
    wait_for(browser, lambda d: "No split" in text_of(d, "#versions-split"))
    assert _rows(browser)["3"] == ("", "100%")
    assert _version(admin, "demo") == 3


def test_a_classify_key_sees_no_versions_button(browser, server):
    _open(browser, server, READER)
    assert not all_css(browser, "button[data-action=versions]")
    assert by_css(browser, "#versions-card").is_displayed() is False
