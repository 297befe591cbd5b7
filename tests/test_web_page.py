"""The web page at / in headless Chromium (Selenium) against a real server: mark entities, predict, see the bars,
add a relation through the form. Skipped when Chromium or its driver is not installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
SENTENCE = "Lionel Messi scored twice for Inter Miami in Miami on Sunday"
NEW_RELATION = "/per/org/plays_for"

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("needs Chromium and its driver: apt-get update && apt-get install -y chromium chromium-driver",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'rocmre[dev]')")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def url(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[str]:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor)) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", "--window-size=1360,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_predict_and_add_relation(browser: webdriver.Chrome, url: str, tmp_path: Path, mnre_root: Path) -> None:
    d = browser
    wait = WebDriverWait(d, 60)
    d.get(url)
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#relations details"))
    n_relations = len(d.find_elements(By.CSS_SELECTOR, "#relations details"))
    assert d.find_element(By.ID, "relation-count").text == str(n_relations)
    wait.until(lambda drv: "relations" in drv.find_element(By.ID, "status").text)

    # type a sentence; mark the head by selecting it, type the tail
    text = d.find_element(By.ID, "text")
    text.clear()
    text.send_keys(SENTENCE)
    d.execute_script("const t = document.getElementById('text'); t.focus(); t.setSelectionRange(2, 9);")  # "onel Me"
    d.find_element(By.ID, "mark-head").click()
    assert d.find_element(By.ID, "head").get_attribute("value") == "Lionel Messi"  # snapped to whole words
    tail = d.find_element(By.ID, "tail")
    tail.clear()
    tail.send_keys("Inter Miami")
    marks = {m.get_attribute("class"): m.text for m in d.find_elements(By.CSS_SELECTOR, "#preview mark")}
    assert marks["head"].startswith("Lionel Messi") and marks["tail"].startswith("Inter Miami")
    top_k = d.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("5")
    image = sorted((mnre_root / "img_org" / "test").glob("*.jpg"))[0]
    d.find_element(By.ID, "image").send_keys(str(image))
    d.find_element(By.ID, "predict").click()
    wait.until(lambda drv: drv.find_element(By.ID, "result").is_displayed()
               or drv.find_element(By.ID, "error").is_displayed())
    assert not d.find_element(By.ID, "error").is_displayed(), d.find_element(By.ID, "error").text
    relation = d.find_element(By.ID, "result-relation").text
    assert relation and relation in d.find_element(By.ID, "relations").get_attribute("textContent")
    bars = d.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
    assert len(bars) == 5
    assert bars[0].find_element(By.CLASS_NAME, "bar-label").text == relation
    assert "image: used" in d.find_element(By.ID, "result-pair").text
    widths = [float(b.find_element(By.CLASS_NAME, "bar-fill").value_of_css_property("width").removesuffix("px"))
              for b in bars]
    assert widths == sorted(widths, reverse=True) and widths[-1] > 0

    # an ambiguous entity shows the error with its candidates
    tail.clear()
    tail.send_keys("Miami")
    d.find_element(By.ID, "predict").click()
    wait.until(lambda drv: drv.find_element(By.ID, "error").is_displayed())
    assert "occurs 2 times" in d.find_element(By.ID, "error").text
    tail.clear()
    tail.send_keys("Inter Miami")

    # add a relation through the form: it is listed and retrieved at once
    d.find_element(By.ID, "new-name").send_keys(NEW_RELATION)
    d.find_element(By.ID, "new-descriptions").send_keys(
        "The head is an athlete who plays for the tail, a sports team.\nThe head is on the roster of the tail club.")
    d.find_element(By.ID, "add-relation").click()
    selector = f'#relations details[data-name="{NEW_RELATION}"]'
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, selector))
    assert len(d.find_elements(By.CSS_SELECTOR, "#relations details")) == n_relations + 1
    assert "Added" in d.find_element(By.ID, "add-message").text
    assert "roster" in d.find_element(By.CSS_SELECTOR, selector).text
    wait.until(lambda drv: f"{n_relations + 1} relations" in drv.find_element(By.ID, "status").text)
    top_k.clear()
    top_k.send_keys(str(n_relations + 1))
    d.find_element(By.ID, "predict").click()
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) == n_relations + 1)
    labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#bars .bar-label")]
    assert NEW_RELATION in labels

    # screenshot: the top of the page with a 5-bar result
    top_k.clear()
    top_k.send_keys("6")
    d.find_element(By.ID, "predict").click()
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) == 6)
    d.execute_script("window.scrollTo(0, 0)")
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1360, min(max(height + 20, 900), 2000))
    shot = tmp_path / "web_page.png"
    assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("ROCMRE_SAVE_SCREENSHOT") == "1":
        target = REPO / "benchmarks" / "results" / "web_page.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "/predict" not in e["message"]]
    assert not errors, errors
