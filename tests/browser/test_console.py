"""The web console in headless Chromium against a real server and worker (API keys on)."""

from __future__ import annotations

import time
import zipfile

import pytest

from adapters_store import AdapterStore
from tests.browser.conftest import ADMIN, READER, SCRIPT_ROW, snap
from tests.browser.pages import (
    CURVE_SCRIPT,
    UNLABELLED,
    all_css,
    assert_nothing_ran,
    by_css,
    check_scores,
    drop_file,
    enter_key,
    expected_scores,
    fill_job,
    goto,
    job_state,
    open_tab,
    shown_scores,
    text_of,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]
TRAIN_STEPS = 60  # logs a loss every 3 steps; seconds on an idle 2-core CPU
EVIL_LABEL = "<img src=x onerror=\"document.title='pwned'\">"


def test_key_prompt_scopes_and_no_blank_page(browser, console):
    url = console.server.url
    browser.get(url + "/healthz")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    wait_for(browser, lambda d: by_css(d, "#key-panel").is_displayed(), message="no key prompt")
    assert "needs an API key" in text_of(browser, "#key-reason")
    assert "401 unauthorized" in text_of(browser, "#key-reason")
    snap(browser, "key")
    enter_key(browser, "wrong-key-0123456789abcdef")
    wait_for(browser, lambda d: "refused this key" in text_of(d, "#key-reason"))
    assert "401 unauthorized: invalid API key" in text_of(browser, "#key-reason")

    enter_key(browser, READER)
    wait_for(browser, lambda d: text_of(d, "#key-status") == "Key: classify only")
    open_tab(browser, "adapters")
    wait_for(browser, lambda d: len(all_css(d, "#adapters-body tr[data-name]")) == 2)
    assert not by_css(browser, "#upload-form").is_displayed()
    assert not all_css(browser, "button[data-action=delete]")
    assert all_css(browser, "button[data-action=download]")
    open_tab(browser, "training")
    assert by_css(browser, "#training-locked").is_displayed()
    assert not by_css(browser, "#train-form").is_displayed()

    by_css(browser, "#key-forget").click()
    enter_key(browser, ADMIN)
    wait_for(browser, lambda d: text_of(d, "#key-status") == "Key: admin")
    assert ADMIN not in browser.current_url
    assert ADMIN not in console.server.logs() and READER not in console.server.logs()


def test_playground_scores_equal_the_api_and_permalink(browser, console):
    texts = ["a great and lovely film", "boring, awful plot"]
    goto(browser, console, "/?tab=playground")
    wait_for(browser, lambda d: len(all_css(d, "#adapter-picks input[type=checkbox]")) >= 2)
    by_css(browser, "#pick-alpha").click()
    by_css(browser, "#pick-beta").click()
    by_css(browser, "#texts").send_keys("\n".join(texts))
    by_css(browser, "#classify-button").click()
    wait_for(browser, lambda d: len(all_css(d, "#results section.result")) == 2)
    check_scores(shown_scores(browser), expected_scores(console, ["alpha", "beta"], texts))
    assert "ms round trip" in text_of(browser, "#results .latency")
    snap(browser, "playground")

    link = by_css(browser, "#permalink").get_attribute("href")
    assert "adapter=alpha" in link and ADMIN not in link
    browser.get("about:blank")
    browser.get(link)  # a fresh page: the permalink runs the same request again
    wait_for(browser, lambda d: len(all_css(d, "#results section.result")) == 2)
    check_scores(shown_scores(browser), expected_scores(console, ["alpha", "beta"], texts))
    assert by_css(browser, "#texts").get_attribute("value") == "\n".join(texts)


def test_upload_lists_an_adapter_and_shows_errors_verbatim(browser, console, factory, tmp_path):
    archive = factory.archive(
        "evil", tmp_path / "evil.zip", seed=5, labels={0: EVIL_LABEL, 1: "fine"}
    )
    goto(browser, console, "/?tab=adapters")
    wait_for(browser, lambda d: len(all_css(d, "#adapters-body tr[data-name]")) == 2)
    by_css(browser, "#upload-file").send_keys(str(archive))
    assert by_css(browser, "#upload-name").get_attribute("value") == "evil"
    by_css(browser, "#upload-button").click()
    wait_for(browser, lambda d: "Uploaded evil" in text_of(d, "#upload-status"))
    wait_for(browser, lambda d: all_css(d, "#adapters-body tr[data-name=evil]"))
    labels = text_of(browser, "#adapters-body tr[data-name=evil] .col-labels")
    assert labels == f"{EVIL_LABEL}, fine"
    assert console.client.get("/adapters/evil").status_code == 200
    assert_nothing_ran(browser)

    garbage = "this is not a zip archive"
    expected = console.client.post(
        "/adapters", files={"file": ("bad.zip", garbage.encode())}, data={"name": "bad"}
    ).json()["error"]
    drop_file(browser, "bad.zip", garbage)
    assert by_css(browser, "#upload-name").get_attribute("value") == "bad"
    by_css(browser, "#upload-button").click()
    wait_for(browser, lambda d: "refused" in text_of(d, "#upload-status"))
    assert text_of(browser, "#upload-status") == (
        f"Upload refused: 422 {expected['code']}: {expected['message']}"
    )
    snap(browser, "adapters")

    goto(browser, console, "/?tab=playground&adapter=evil&texts=hello")
    wait_for(browser, lambda d: all_css(d, "#results section.result"))
    shown = [e.text for e in all_css(browser, "#results li.bar .label")]
    assert sorted(shown) == sorted([EVIL_LABEL, "fine"])
    assert_nothing_ran(browser)


def test_training_job_progress_curve_and_classify(browser, console):
    from selenium.webdriver.support.ui import Select

    goto(browser, console, "/?tab=training")
    wait_for(browser, lambda d: len(all_css(d, "#job-dataset option")) >= 2)
    # Empty recipe fields show what the server's default recipe sets for the chosen method.
    recipe = console.client.get("/train-jobs/recipes").json()["recipes"]["default"]
    batch, rate = by_css(browser, "#job-batch-size"), by_css(browser, "#job-learning-rate")
    method = Select(by_css(browser, "#job-method"))
    assert method.first_selected_option.get_attribute("value") == "seq_bn"
    assert batch.get_attribute("value") == ""
    assert batch.get_attribute("placeholder") == str(recipe["seq_bn"]["batch_size"])
    method.select_by_value("ia3")
    assert recipe["ia3"]["learning_rate"] != recipe["seq_bn"]["learning_rate"]
    wait_for(
        browser,
        lambda d: float(rate.get_attribute("placeholder")) == recipe["ia3"]["learning_rate"],
    )
    method.select_by_value("seq_bn")
    Select(by_css(browser, "#job-dataset")).select_by_visible_text(
        next(o.text for o in all_css(browser, "#job-dataset option") if o.text.startswith("evil"))
    )
    by_css(browser, "#dataset-preview").find_element("xpath", "..").find_element(
        "xpath", "ancestor::details/summary"
    ).click()
    cells = [c.text for c in all_css(browser, "#dataset-preview tbody td")]
    assert SCRIPT_ROW in cells
    assert_nothing_ran(browser)

    fill_job(browser, "kw-trained", max_steps=TRAIN_STEPS)
    wait_for(browser, lambda d: job_state(d, "kw-trained"), message="no card for the job")
    # A second job waits behind the first (one worker): cancel it from its card.
    fill_job(browser, "kw-cancel", max_steps=100_000)
    wait_for(browser, lambda d: job_state(d, "kw-cancel"), message="no card for the 2nd job")
    by_css(browser, "#jobs li.job[data-adapter=kw-cancel] button[data-action=cancel]").click()
    wait_for(browser, lambda d: job_state(d, "kw-cancel")[0] == "cancelled", timeout=240)
    assert (
        console.client.get("/train-jobs?status=cancelled").json()["jobs"][0]["adapter"]["name"]
        == "kw-cancel"
    )

    seen = []
    started = time.monotonic()
    deadline = started + 300
    while time.monotonic() < deadline:
        state = job_state(browser, "kw-trained")
        seen.append([*state, round(time.monotonic() - started, 2)])
        if state[0] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    print("job states seen (status, step, points, s):", seen[::20], seen[-1])
    assert seen[-1][0] == "succeeded", (seen[-5:], console.diagnostics()[-3000:])
    assert seen[-1][1] == TRAIN_STEPS  # the bar is full
    moving = [s for s in seen if s[0] == "running" and 0 < s[1] < TRAIN_STEPS]
    assert moving, f"the progress bar never showed a step between 0 and the end: {seen}"
    points = [state[2] for state in seen]
    assert points == sorted(points), points  # the curve only gains points
    assert points[-1] > points[0] and any(s[2] > 0 for s in moving), points
    browser.execute_script(
        "document.querySelector('#train-form details').open = false;window.scrollTo(0, 0)"
    )
    snap(browser, "training")

    by_css(browser, "#jobs li.job[data-status=succeeded] a[data-action=try]").click()
    wait_for(browser, lambda d: by_css(d, "#panel-playground").is_displayed())
    wait_for(browser, lambda d: all_css(d, "#pick-kw-trained"))
    assert by_css(browser, "#pick-kw-trained").is_selected()
    by_css(browser, "#texts").send_keys("what a wonderful day")
    by_css(browser, "#classify-button").click()
    wait_for(browser, lambda d: all_css(d, "#results section.result[data-adapter=kw-trained]"))
    check_scores(
        shown_scores(browser), expected_scores(console, ["kw-trained"], ["what a wonderful day"])
    )


def test_sort_and_delete_an_adapter(browser, console):
    goto(browser, console, "/?tab=adapters")
    wait_for(browser, lambda d: all_css(d, "#adapters-body tr[data-name=beta]"))
    names = [r.get_attribute("data-name") for r in all_css(browser, "#adapters-body tr")]
    assert names == sorted(names)
    by_css(browser, "button.sort[data-key=name]").click()
    names_desc = [r.get_attribute("data-name") for r in all_css(browser, "#adapters-body tr")]
    assert names_desc == sorted(names, reverse=True)

    by_css(browser, "button[data-action=download][data-name=alpha]").click()
    wait_for(browser, lambda d: text_of(d, "#adapters-status") == "Downloaded alpha.")
    saved = browser.download_dir / "alpha-v1.zip"
    wait_for(browser, lambda d: saved.is_file() and zipfile.is_zipfile(saved), timeout=10)

    by_css(browser, "button[data-action=delete][data-name=beta]").click()
    by_css(browser, "button[data-action=cancel-delete][data-name=beta]").click()
    assert console.client.get("/adapters/beta").status_code == 200
    by_css(browser, "button[data-action=delete][data-name=beta]").click()
    by_css(browser, "button[data-action=confirm-delete][data-name=beta]").click()
    wait_for(browser, lambda d: "Deleted beta" in text_of(d, "#adapters-status"))
    assert not all_css(browser, "#adapters-body tr[data-name=beta]")
    assert console.client.get("/adapters/beta").status_code == 404


def test_labels_and_keyboard(browser, console):
    from selenium.webdriver.common.keys import Keys

    goto(browser, console, "/?tab=playground&adapter=alpha&texts=fine")
    wait_for(browser, lambda d: all_css(d, "#results section.result"))
    assert browser.execute_script(UNLABELLED) == []
    by_css(browser, "#tab-playground").send_keys(Keys.ARROW_RIGHT)
    wait_for(browser, lambda d: all_css(d, "#adapters-body tr[data-name]"))
    assert browser.switch_to.active_element.get_attribute("id") == "tab-adapters"
    assert browser.execute_script(UNLABELLED) == []
    residency = by_css(
        browser,
        "tr[data-name=evil] button[data-action=load], tr[data-name=evil] "
        "button[data-action=unload]",
    )
    resident = residency.get_attribute("data-action") == "unload"
    residency.send_keys(Keys.ENTER)  # the keyboard, not a click
    shown = "no" if resident else "yes"
    wait_for(browser, lambda d: text_of(d, "tr[data-name=evil] .col-resident") == shown)
    assert console.client.get("/adapters/evil").json()["resident"] is (not resident)
    by_css(browser, "#tab-adapters").send_keys(Keys.END)
    wait_for(browser, lambda d: by_css(d, "#panel-training").is_displayed())
    wait_for(browser, lambda d: all_css(d, "#jobs li.job"))
    assert browser.execute_script(UNLABELLED) == []


def test_no_script_errors_or_csp_violations(browser, console):
    goto(browser, console, "/?tab=adapters")
    wait_for(browser, lambda d: all_css(d, "#adapters-body tr[data-name]"))
    problems = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
        and ("Content Security Policy" in entry["message"] or "Uncaught" in entry["message"])
    ]
    assert problems == []
    assert_nothing_ran(browser)


def test_curve_reader_accepts_every_shape(browser, console):
    goto(browser, console, "/?tab=playground")
    got = browser.execute_async_script(CURVE_SCRIPT)
    assert got == [
        {"loss": [[6, 0.5]], "evals": {}},
        {"loss": [], "evals": {"eval_accuracy": [[9, 0.75]]}},
        {
            "loss": [[3, 0.9], [6, 0.7]],
            "evals": {"eval_accuracy": [[6, 0.6]], "eval_loss": [[6, 0.8]]},
        },
        {"loss": [[2, 1.5]], "evals": {"eval_accuracy": [[4, 0.9]]}},
        {"loss": [[2, 1.2]], "evals": {"eval_loss": [[4, 0.6]], "eval_accuracy": [[4, 0.8]]}},
    ]


def _rows(driver) -> list[str]:
    return [r.get_attribute("data-name") for r in all_css(driver, "#adapters-body tr[data-name]")]


def _search(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = by_css(driver, "#adapters-search")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text or Keys.DELETE)


def test_adapter_table_pages_and_searches(browser, console, factory, tmp_path):
    """130 more adapters: the table shows 50 at a time, Load more adds the next page (from the
    API's cursor), the search box asks the server for a name prefix."""
    store = AdapterStore(console.store_dir)
    saved = factory.save("bulk", tmp_path / "bulk", seed=9)
    names = [f"bulk-{i:03d}" for i in range(130)]
    for name in names:
        store.add(name, saved, base_model=factory.base_ref)
    try:
        goto(browser, console, "/?tab=adapters")
        wait_for(browser, lambda d: len(_rows(d)) == 50)
        total = console.client.get("/adapters?limit=1").json()["total"]
        assert total >= 131
        assert text_of(browser, "#adapters-count") == f"Showing 50 of {total} adapter(s)."
        _search(browser, "BULK-")
        wait_for(browser, lambda d: "starts with “bulk-”" in text_of(d, "#adapters-count"))
        assert _rows(browser) == names[:50]
        for shown in (100, 130):
            by_css(browser, "#adapters-more").click()
            wait_for(browser, lambda d, shown=shown: len(_rows(d)) == shown)
        assert _rows(browser) == names
        assert not by_css(browser, "#adapters-more").is_displayed()
        assert text_of(browser, "#adapters-count").startswith("Showing 130 of 130 adapter(s)")
        _search(browser, "bulk-12")
        wait_for(browser, lambda d: _rows(d) == names[120:])
        _search(browser, "nothing-")
        wait_for(browser, lambda d: "No adapter's name starts with" in text_of(d, "#adapters-body"))
        _search(browser, "")
        wait_for(
            browser, lambda d: len(_rows(d)) == 50 and by_css(d, "#adapters-more").is_displayed()
        )
    finally:
        for name in names:
            store.delete(name)
