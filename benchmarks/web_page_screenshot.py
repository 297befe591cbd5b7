"""The README's screenshot of the try-it page, taken from a trained model in headless Chromium.

    python benchmarks/web_page_screenshot.py --model runs/quickstart [--out benchmarks/results/web_page.png]

Serves the model on 127.0.0.1, types a sentence from MNRE's test split, marks head and tail, predicts with the top 6
and saves the page. Needs ``chromium`` and ``chromium-driver`` (Debian packages) and selenium (``rocmre[dev]``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SENTENCE = "Rafael Nadal gets engaged to girlfriend of 14 years , Mery Perello"
HEAD, TAIL = "Rafael Nadal", "Mery Perello"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model folder")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "web_page.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from rocmre.inference.extractor import RelationExtractor
    from rocmre.service import create_app, serve_in_thread

    extractor = RelationExtractor.from_pretrained(args.model)
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--window-size=1360,1000"):
        options.add_argument(flag)
    with serve_in_thread(create_app(extractor)) as url:
        d = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        try:
            wait = WebDriverWait(d, 60)
            d.get(url)
            wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#relations details"))
            for field, value in (("text", SENTENCE), ("head", HEAD), ("tail", TAIL), ("top-k", "6")):
                box = d.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)
            d.find_element(By.ID, "predict").click()
            wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) == 6)
            d.execute_script("window.scrollTo(0, 0)")
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1360, min(max(height + 20, 900), 2000))
            relation = d.find_element(By.ID, "result-relation").text
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            d.save_screenshot(args.out)
        finally:
            d.quit()
    print(f"{HEAD} -> {TAIL}: {relation}; saved {args.out}")


if __name__ == "__main__":
    main()
