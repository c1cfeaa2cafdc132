"""The playground page, driven in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which `make` installs) through Selenium. The server tests and
`benchmarks/serving.py` run this same check."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import BackendUnavailableError


@dataclass
class PageSeen:
    """What the page showed after each question."""

    answers: list[str] = field(default_factory=list)
    citations: list[int] = field(default_factory=list)
    passages: list[int] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    cleared: bool = False


def chromium() -> Any:
    """A headless Chromium driven by Selenium, from the system's packages (no download)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        raise BackendUnavailableError("the playground check needs Chromium and its driver: "
                                      "apt-get install chromium chromium-driver (make does)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


def drive_playground(url: str, model: str, questions: list[str], timeout_s: float = 600,
                     screenshot: Path | None = None) -> PageSeen:
    """Open the page, pick `model`, ask each question in one conversation and wait for each
    streamed answer; record what the page shows, take a screenshot, then reset it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    seen = PageSeen()
    browser = chromium()
    try:
        browser.get(url)
        wait = WebDriverWait(browser, timeout_s)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"#model option[value='{model}']"))
        Select(browser.find_element(By.ID, "model")).select_by_value(model)
        for number, question in enumerate(questions, 1):
            browser.find_element(By.ID, "question").send_keys(question)
            browser.find_element(By.ID, "send").click()
            done = ".answer[data-done='true'], .error[data-done='true']"
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, done)) >= number)
            last = browser.find_elements(By.CSS_SELECTOR, done)[-1]
            failed = "error" in (last.get_attribute("class") or "")
            seen.answers.append(f"error: {last.text}" if failed else
                                last.find_element(By.CLASS_NAME, "text").text)
            seen.citations.append(len(browser.find_elements(By.CSS_SELECTOR, "#citations li.citation")))
            seen.passages.append(len(browser.find_elements(By.CSS_SELECTOR, "#passages li")))
            seen.stages.append([row.find_element(By.TAG_NAME, "td").text for row in
                                browser.find_elements(By.CSS_SELECTOR, "#timings tr.stage")])
            seen.tokens.append(browser.find_element(By.ID, "tokens").text)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(screenshot))
        browser.find_element(By.ID, "reset").click()
        seen.cleared = not browser.find_elements(By.CSS_SELECTOR, "#messages .turn")
    finally:
        browser.quit()
    return seen
