"""The console's training form with the new task fields: a sentence-pair regression job (text
pair column proposed, task chosen) and a multi-label job (task inferred); the job cards show the
task, its scores (Pearson; micro/macro F1) and per-label F1 folded, and draw the eval curve."""

from __future__ import annotations

import pytest

from tests.browser.conftest import snap
from tests.browser.pages import all_css, by_css, goto, wait_for
from tests.support.task_data import multi_label_rows, regression_rows
from tests.support.tiny import write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

CARD = "#jobs li.job[data-adapter={}]"


def _datasets(console) -> None:
    folder = console.data_dir / "datasets"
    rows = regression_rows(80, seed=8)
    for i, row in enumerate(rows):
        row["text_pair"] = f"second sentence {i}"
    write_jsonl(folder / "sim.jsonl", rows)
    write_jsonl(folder / "emo.jsonl", multi_label_rows(80, seed=9))


def _choose_dataset(driver, prefix: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait_for(driver, lambda d: any(o.text.startswith(prefix)
                                   for o in all_css(d, "#job-dataset option")))  # fmt: skip
    Select(by_css(driver, "#job-dataset")).select_by_visible_text(
        next(o.text for o in all_css(driver, "#job-dataset option") if o.text.startswith(prefix))
    )


def _submit(driver, name: str) -> None:
    for selector, value in (("#job-name", name), ("#job-max-steps", "6"),
                            ("#job-batch-size", "8"), ("#job-max-length", "32"),
                            ("#job-learning-rate", "0.005")):  # fmt: skip
        field = by_css(driver, selector)
        field.clear()
        field.send_keys(value)
    by_css(driver, "#job-submit").click()


def _succeeded(driver, name: str) -> bool:
    cards = all_css(driver, CARD.format(name))
    if cards and cards[0].get_attribute("data-status") == "failed":
        raise AssertionError(cards[0].text)
    return bool(cards) and cards[0].get_attribute("data-status") == "succeeded"


def test_pair_regression_and_multi_label_jobs_from_the_form(browser, console):
    from selenium.webdriver.support.ui import Select

    _datasets(console)
    goto(browser, console, "/?tab=training")
    _choose_dataset(browser, "sim.")
    pair = Select(by_css(browser, "#job-text-pair-column"))
    assert pair.first_selected_option.get_attribute("value") == "text_pair"  # proposed
    Select(by_css(browser, "#job-label-column")).select_by_visible_text("score")
    Select(by_css(browser, "#job-task")).select_by_value("regression")
    _submit(browser, "sim-ui")
    wait_for(browser, lambda d: _succeeded(d, "sim-ui"), timeout=240, message="regression job")
    card = CARD.format("sim-ui")
    task = by_css(browser, f"{card} .job-task")
    assert task.get_attribute("data-task") == "regression"
    assert task.text == "regression, sentence pairs"
    scores = by_css(browser, f"{card} .job-scores").text
    assert "pearson: " in scores and "spearman: " in scores and "accuracy" not in scores
    wait_for(browser, lambda d: int(by_css(d, f"{card} svg.chart-eval").get_attribute(
        "data-points")) > 0, message="no eval points drawn")  # fmt: skip
    job = console.client.get("/train-jobs?limit=5").json()["jobs"][0]
    assert job["config"]["text_pair_column"] == "text_pair"
    assert job["config"]["task"] == "regression" and job["config"]["label_column"] == "score"

    _choose_dataset(browser, "emo.")
    assert Select(by_css(browser, "#job-text-pair-column")).first_selected_option.text == (
        "none (single texts)"
    )
    Select(by_css(browser, "#job-label-column")).select_by_visible_text("labels")
    Select(by_css(browser, "#job-task")).select_by_value("")
    _submit(browser, "emo-ui")
    wait_for(browser, lambda d: _succeeded(d, "emo-ui"), timeout=240, message="multi-label job")
    card = CARD.format("emo-ui")
    assert by_css(browser, f"{card} .job-task").text == "multi-label"
    scores = by_css(browser, f"{card} .job-scores").text
    assert "f1_macro: " in scores and "f1_micro: " in scores and "f1/" not in scores
    summary = by_css(browser, f"{card} details.per-label summary")
    assert summary.text == "F1 per label (3, at the tuned thresholds)"
    summary.click()
    detail = by_css(browser, f"{card} details.per-label p").text
    assert all(f"{name}: " in detail for name in ("negative", "positive", "question"))
    job = console.client.get("/train-jobs?limit=5").json()["jobs"][0]
    assert "task" not in job["config"] or job["config"]["task"] is None  # inferred
    snap(browser, "training-tasks")
