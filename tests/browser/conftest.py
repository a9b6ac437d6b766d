"""A real `python -m app` + worker (API keys on) and headless Debian Chromium driven by Selenium.

Module-scoped: one server, one worker and one browser serve every test of a module. The tests
skip, saying why, only where Chromium, chromedriver or Selenium is missing (scripts/test.sh
installs them when it can). `UPDATE_SCREENSHOTS=1` writes docs/screenshots/*.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.jobs import JobSystem
from tests.support.server import REPO
from tests.support.tiny import write_jsonl

ADMIN = "admin-key-browser-0123456789"
READER = "reader-key-browser-0123456789"
KEYS = f"{ADMIN}:admin+classify,{READER}:classify"
LABELS3 = {0: "neg", 1: "neu", 2: "pos"}
SCRIPT_ROW = "<script>document.title='pwned'</script> a row with a script tag"
SCREENSHOTS = REPO / "docs" / "screenshots"


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "Chromium or chromedriver not found: install the Debian packages chromium and "
            "chromium-driver (scripts/test.sh does so when run as root with apt)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    chromium, driver_path = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.download_dir = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console(tmp_path_factory, tiny_model_dir, factory) -> Iterator[JobSystem]:
    """API (keys on, no embedded worker) + one worker; alpha and beta in the store, and a
    dataset file holding a <script> beside the keyword dataset."""
    root = tmp_path_factory.mktemp("console")
    system = JobSystem(root, tiny_model_dir, env={"APP_API_KEYS": KEYS}, lease_s=5.0)
    store = AdapterStore(system.store_dir)
    factory.add_to_store(store, "alpha", seed=1)
    factory.add_to_store(store, "beta", seed=2, labels=LABELS3)
    rows = [{"text": SCRIPT_ROW, "label": i % 2} for i in range(20)]
    write_jsonl(system.data_dir / "datasets" / "evil.jsonl", rows)
    with system:
        assert system.server is not None
        system.client.close()
        system.client = httpx.Client(
            base_url=system.server.url,
            timeout=30.0,
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        yield system


def snap(driver, name: str) -> None:
    """Save a screenshot under docs/screenshots when UPDATE_SCREENSHOTS=1 (CI leaves the tree)."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
