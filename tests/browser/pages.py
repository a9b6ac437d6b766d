"""Page helpers for the console's browser tests: find, wait, read what the page shows."""

from __future__ import annotations

from tests.browser.conftest import ADMIN

TITLE = "adapter-serve console"


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait_for(driver, condition, timeout=30.0, message=""):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders tables and job cards: an element found a moment ago may be replaced.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(
        lambda d: condition(d), message
    )


def text_of(driver, selector):
    return by_css(driver, selector).text


def enter_key(driver, key):
    wait_for(driver, lambda d: by_css(d, "#key-panel").is_displayed(), message="key prompt")
    field = by_css(driver, "#key-input")
    field.clear()
    field.send_keys(key)
    by_css(driver, "#key-form button[type=submit]").click()


def open_tab(driver, name):
    by_css(driver, f"#tab-{name}").click()
    wait_for(driver, lambda d: by_css(d, f"#panel-{name}").is_displayed())


def goto(driver, console, path):
    """Open `path` with the admin key already in this tab (the key prompt has its own test)."""
    url = console.server.url
    if not driver.current_url.startswith(url):
        driver.get(url + "/healthz")
    driver.execute_script("sessionStorage.setItem('adapter-serve.api-key', arguments[0])", ADMIN)
    driver.get(url + path)


def assert_nothing_ran(driver):
    assert driver.title == TITLE
    assert driver.execute_script("return document.querySelectorAll('img, main script').length") == 0


def shown_scores(driver):
    """{adapter: (version, [[(label, score), ...] per text])} as the page shows them."""
    shown = {}
    for section in all_css(driver, "#results section.result"):
        rows = []
        for row in section.find_elements("css selector", "tbody tr"):
            items = row.find_elements("css selector", "li.bar")
            rows.append(
                [
                    (
                        item.find_element("css selector", ".label").text,
                        float(
                            item.find_element("css selector", ".score").get_attribute("data-score")
                        ),
                        item.find_element("css selector", ".score").text,
                    )
                    for item in items
                ]
            )
        shown[section.get_attribute("data-adapter")] = (
            int(section.get_attribute("data-version")),
            rows,
        )
    return shown


def expected_scores(console, adapters, texts):
    r = console.client.post(
        "/classify", json={"adapters": adapters, "inputs": texts, "top_k": None}
    )
    assert r.status_code == 200, r.text
    return {
        res["adapter"]: (
            res["version"],
            [[(p["label"], p["score"]) for p in preds] for preds in res["predictions"]],
        )
        for res in r.json()["results"]
    }


def check_scores(shown, expected):
    assert shown.keys() == expected.keys()
    for name, (version, rows) in expected.items():
        shown_version, shown_rows = shown[name]
        assert shown_version == version
        assert len(shown_rows) == len(rows)
        for shown_row, row in zip(shown_rows, rows, strict=True):
            assert [(label, score) for label, score, _ in shown_row] == row
            assert [text for _, _, text in shown_row] == [f"{score:.4f}" for _, score in row]


def drop_file(driver, name, payload):
    """Drop a file made in the page on the drop zone, as a drag from the desktop does."""
    driver.execute_script(
        """
        const [name, text] = arguments;
        const data = new DataTransfer();
        data.items.add(new File([text], name, {type: "application/zip"}));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        """,
        name,
        payload,
    )


def job_state(driver, name):
    """(status, progress value, loss points drawn) of the job card training `name`."""
    return driver.execute_script(
        """
        for (const card of document.querySelectorAll("#jobs li.job")) {
          if (card.querySelector(".job-name").textContent !== arguments[0]) continue;
          const chart = card.querySelector("svg.chart-loss");
          return [card.dataset.status, card.querySelector("progress").value,
                  Number(chart ? chart.dataset.points : 0)];
        }
        return null;
        """,
        name,
    )


def fill_job(driver, name, max_steps):
    from selenium.webdriver.support.ui import Select

    wait_for(driver, lambda d: len(all_css(d, "#job-dataset option")) >= 2)
    Select(by_css(driver, "#job-dataset")).select_by_visible_text(
        next(o.text for o in all_css(driver, "#job-dataset option") if o.text.startswith("kw."))
    )
    assert Select(by_css(driver, "#job-text-column")).first_selected_option.text == "text"
    assert Select(by_css(driver, "#job-label-column")).first_selected_option.text == "label"
    for selector, value in (
        ("#job-name", name),
        ("#job-max-steps", str(max_steps)),
        ("#job-batch-size", "8"),
        ("#job-max-length", "32"),
        ("#job-learning-rate", "0.005"),
    ):
        field = by_css(driver, selector)
        field.clear()
        field.send_keys(value)
    by_css(driver, "#job-submit").click()


UNLABELLED = """
return [...document.querySelectorAll("input, select, textarea, button, progress, meter")]
  .filter((e) => e.offsetParent !== null)
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                 && !(e.tagName === "BUTTON" && e.textContent.trim()))
  .map((e) => e.outerHTML);
"""


CURVE_SCRIPT = """
const done = arguments[arguments.length - 1];
import("/console/chart.js").then(({ Curve, pointsOf }) => {
  const read = (job) => {
    const curve = new Curve();
    curve.add(pointsOf(job));
    return { loss: [...curve.loss], evals: Object.fromEntries(
      [...curve.evals].map(([k, v]) => [k, [...v]])) };
  };
  done([
    read({ progress: { step: 6, loss: 0.5, phase: "train", eval: null } }),
    read({ progress: { step: 9, loss: null, phase: "eval", eval: { eval_accuracy: 0.75 } } }),
    read({ progress: { step: 9 }, curve: [{ step: 3, loss: 0.9 }, { step: 6, loss: 0.7 },
                                         { step: 6, eval_accuracy: 0.6, eval_loss: 0.8 }] }),
    read({ progress: {}, history: { loss: [{ step: 2, loss: 1.5 }],
                                    eval: [{ step: 4, eval: { accuracy: 0.9 } }] } }),
    read({ progress: { step: 8 }, curves: {  // GET /train-jobs/{id}: training.curves' shape
      metric: "accuracy", best_step: null, stopped_early: false,
      train: [{ step: 2, epoch: 0.1, loss: 1.2, learning_rate: 0.001 }],
      eval: [{ step: 4, epoch: 0.2, loss: 0.6, accuracy: 0.8, f1_macro: null }] } }),
  ]);
}, (error) => done(String(error)));
"""
