"""The demo in real headless Chromium: it loads, takes a prompt, shows the answer; a screenshot is saved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tianji_ft.xtuner.runner import free_port

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900"]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tianji-ft web exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not come up in {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def demo(taught_model_dir, tmp_path):
    """``tianji-ft web MODEL`` running on a free loopback port; yields its URL."""
    port = free_port()
    log = tmp_path / "web.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tianji_ft", "web", str(taught_model_dir), "--port", str(port),
             "--temperature", "0", "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        # The CLI and the Streamlit child it started share this new session's group.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                    "apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_prompt_in_the_browser_gets_the_answer(demo, browser, wishes, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    question, answer = wishes[6]
    browser.get(demo)
    box = WebDriverWait(browser, 120).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea[data-testid='stChatInputTextArea']")))
    assert "送祝福大师" in browser.find_element(By.TAG_NAME, "h1").text
    box.send_keys(question)
    box.send_keys(Keys.ENTER)

    def answered(driver):
        messages = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage']")
        return len(messages) >= 2 and answer in messages[-1].text

    try:
        WebDriverWait(browser, 120).until(answered)
    finally:
        browser.save_screenshot(str(tmp_path / "web_demo.png"))
    shot = tmp_path / "web_demo.png"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    messages = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage']")
    assert question in messages[0].text
