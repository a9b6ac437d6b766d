"""The playground with adapters of every task type (issue 21), in headless Chromium against a
real `python -m app`: sentence pairs typed in (a second text per line), multi-label answers
showing the labels at or over threshold, regression answers showing the number; each as
/classify answers the same inputs."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from adapters_store import AdapterStore
from tests.browser.conftest import ADMIN, KEYS
from tests.browser.pages import all_css, by_css, goto, wait_for
from tests.support.server import running_server
from tests.support.tasks import add_task_adapter

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ENV = {"APP_EMBEDDED_WORKER": "false", "APP_LOG_LEVEL": "warning", "APP_API_KEYS": KEYS}
EMOTIONS = {0: "joy", 1: "anger", 2: "fear", 3: "love"}
TEXTS = ["a good film", "the plot was awful", "my phone is great"]
SECONDS = ["", "the acting was poor", ""]  # the second input is a pair
INPUTS = [TEXTS[0], {"text": TEXTS[1], "text_pair": SECONDS[1]}, TEXTS[2]]
NAMES = ["sentiment", "emotions", "stsb"]


@pytest.fixture(scope="module")
def console(tmp_path_factory, tiny_model_dir, factory) -> Iterator[SimpleNamespace]:
    data = tmp_path_factory.mktemp("tasks-console")
    store = AdapterStore(data / "adapters")
    add_task_adapter(factory, store, "sentiment", task="single_label", seed=41)
    add_task_adapter(
        factory, store, "emotions", task="multi_label", seed=42, labels=EMOTIONS,
        thresholds={0: 0.25, 1: 0.9, 2: 0.99, 3: 0.6}, config="lora",
    )  # fmt: skip
    add_task_adapter(
        factory, store, "stsb", task="regression", seed=43, labels={0: "similarity"},
        text_pair=True,
    )  # fmt: skip
    with running_server(data_dir=data, base_model=tiny_model_dir, env=ENV) as server:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
            yield SimpleNamespace(server=server, client=client)


def _api(console, **extra) -> dict[str, dict]:
    body = {"adapters": NAMES, "inputs": INPUTS, "top_k": None, **extra}
    response = console.client.post("/classify", json=body)
    assert response.status_code == 200, response.text
    return {r["adapter"]: r for r in response.json()["results"]}


def _section(driver, name: str):
    return by_css(driver, f'#results section.result[data-adapter="{name}"]')


def _rows(driver, name: str):
    return _section(driver, name).find_elements("css selector", "tbody tr")


def _bars(row) -> list[tuple[str, float, bool]]:
    return [
        (
            item.get_attribute("data-label"),
            float(item.find_element("css selector", ".score").get_attribute("data-score")),
            "over" in item.get_attribute("class").split(),
        )
        for item in row.find_elements("css selector", "li.bar")
    ]


def _classify(browser) -> None:
    by_css(browser, "#classify-button").click()
    wait_for(browser, lambda d: len(all_css(d, "#results section.result")) == len(NAMES))


# The page classifies every adapter in one request, the reference asks the API again: the rows
# share other passes, and the one-pass body (gathered weights, batched heads) rounds ~1e-8
# differently with the batch's make-up; issue 29's bound against the library is 1e-5.
SAME = 1e-6


def _same_bars(shown: list[tuple[str, float, bool]], predictions: list[dict]) -> None:
    assert [label for label, _, _ in shown] == [p["label"] for p in predictions]
    assert [score for _, score, _ in shown] == pytest.approx(
        [p["score"] for p in predictions], abs=SAME
    )


def _check_page(browser, want: dict[str, dict]) -> None:
    singles = want["sentiment"]["predictions"]
    for row, item, single in zip(_rows(browser, "sentiment"), INPUTS, singles, strict=True):
        _same_bars(_bars(row), single)
        cell = row.find_element("css selector", "td.text").text
        assert cell.startswith(item if isinstance(item, str) else item["text"])
        assert ("+ the acting was poor" in cell) == (not isinstance(item, str))
    multi = want["emotions"]
    for index, row in enumerate(_rows(browser, "emotions")):
        chosen = multi["labels"][index]
        shown = row.find_element("css selector", ".over-threshold")
        assert shown.find_element("css selector", "strong").text == (", ".join(chosen) or "none")
        bars = _bars(row)
        _same_bars(bars, multi["predictions"][index])
        assert {label for label, _, over in bars if over} == set(chosen)
    for row, p in zip(_rows(browser, "stsb"), want["stsb"]["predictions"], strict=True):
        number = row.find_element("css selector", "p.number .score")
        assert float(number.get_attribute("data-score")) == pytest.approx(p["score"], abs=SAME)
        assert number.text == f"{p['score']:.4f}"


def test_pairs_multi_label_and_regression_in_the_playground(browser, console):
    goto(browser, console, "/?tab=playground")
    wait_for(browser, lambda d: len(all_css(d, "#adapter-picks input[type=checkbox]")) == 3)
    for name in NAMES:
        by_css(browser, f"#pick-{name}").click()
    by_css(browser, "#texts").send_keys("\n".join(TEXTS))
    by_css(browser, "#text-pairs").send_keys("\n".join(SECONDS))
    _classify(browser)
    want = _api(console)
    assert any(want["emotions"]["labels"]), "no label over its threshold: the check is empty"
    assert any(len(c) < len(EMOTIONS) for c in want["emotions"]["labels"]), want["emotions"]
    _check_page(browser, want)

    # A threshold typed in overrides the stored ones; the permalink keeps pairs and threshold.
    by_css(browser, "#threshold").send_keys("0")
    _classify(browser)
    wait_for(
        browser,
        lambda d: all(
            r.find_element("css selector", ".over-threshold strong").text.count(",") == 3
            for r in _rows(d, "emotions")
        ),
    )
    _check_page(browser, _api(console, threshold=0.0))
    link = by_css(browser, "#permalink").get_attribute("href")
    assert "pairs=" in link and "threshold=0" in link
    browser.get(link)
    wait_for(browser, lambda d: len(all_css(d, "#results section.result")) == len(NAMES))
    _check_page(browser, _api(console, threshold=0.0))
