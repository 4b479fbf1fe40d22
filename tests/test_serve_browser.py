"""The demo page in a real browser: headless Debian Chromium driven by Selenium (the driver path is given, so
Selenium Manager downloads nothing). Upload a fixture photo -> the verdict shows, the three.js canvas draws the
reconstructed face; a text file -> the error shows; a video scored by a clip model -> a bar per clip. Screenshots
are saved in the test's temporary folder."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inference_helpers import PROJECT_ROOT, trained_clip_checkpoint, trained_vrn_checkpoint
from tests.test_serve import _short_video

pytestmark = [pytest.mark.fixtures, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BACKGROUND = (242, 242, 242)  # the viewer's clear colour (app.js BACKGROUND)

_COUNT_DRAWN = """
const c = document.getElementById('viewer');
const t = document.createElement('canvas'); t.width = c.width; t.height = c.height;
const ctx = t.getContext('2d'); ctx.drawImage(c, 0, 0);
const d = ctx.getImageData(0, 0, t.width, t.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) {
  if (Math.abs(d[i] - arguments[0]) > 12 || Math.abs(d[i + 1] - arguments[1]) > 12 ||
      Math.abs(d[i + 2] - arguments[2]) > 12) n++;
}
return [n, t.width * t.height];
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[str]:
    """Start ``faceforge serve ARGS`` on a free port; yields its URL, stops it afterwards."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver (CI installs it)")
    pytest.importorskip("selenium")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "faceforge.cli", "serve", "--port", str(port), *args],
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/api/info", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"faceforge serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path):
    """Meso-4 with the authors' weights and a small trained VRN."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver (CI installs it)")
    with _serve(tmp_path_factory, "--ckpt", str(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"),
                "--recon-ckpt", str(trained_vrn_checkpoint(tmp_path_factory))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1400",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_upload_photo_shows_verdict_and_3d_face(server: str, browser, fixtures_dir: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    photo = fixtures_dir / "mesonet" / "test_images" / "df" / "df00204.jpg"
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    browser.find_element(By.ID, "submit").click()
    wait = WebDriverWait(browser, 180)
    decision = wait.until(lambda d: d.find_element(By.ID, "decision") if d.find_elements(By.ID, "decision") else None)
    assert decision.text == "FAKE"  # the authors' fake test image
    assert "P(fake)" in browser.find_element(By.ID, "verdict").text
    wait.until(lambda d: d.find_element(By.ID, "viewer").get_attribute("data-loaded") == "true")
    time.sleep(1.0)  # a few animation frames
    drawn, total = browser.execute_script(_COUNT_DRAWN, *BACKGROUND)
    browser.save_screenshot(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert drawn > 0.05 * total, f"the 3D canvas is blank ({drawn} of {total} pixels drawn)"
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_text_upload_shows_the_error(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a picture")
    browser.get(server)
    browser.find_element(By.ID, "file-input").send_keys(str(notes))
    browser.find_element(By.ID, "submit").click()
    error = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed() else None)
    assert "notes.txt" in error.text and "not an image" in error.text
    browser.save_screenshot(str(tmp_path / "error.png"))


def test_clip_model_video_shows_a_bar_per_clip(tmp_path_factory: pytest.TempPathFactory, browser,
                                               fixtures_dir: Path, tmp_path: Path) -> None:
    """A clip model's video verdict: the chart draws one bar per scored clip (a frame model draws points)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver (CI installs it)")
    video = _short_video(fixtures_dir / "videos" / "dfdc" / "lynaeydofd.mp4", tmp_path / "clip.mp4", 1.0)
    with _serve(tmp_path_factory, "--ckpt", str(trained_clip_checkpoint(tmp_path_factory)), "--frames", "6") as url:
        browser.get(url)
        browser.find_element(By.ID, "file-input").send_keys(str(video))
        browser.find_element(By.ID, "submit").click()
        chart = WebDriverWait(browser, 180).until(
            lambda d: d.find_element(By.ID, "clip-chart") if d.find_elements(By.ID, "clip-chart") else None)
        assert len(chart.find_elements(By.CSS_SELECTOR, "line.clip-bar")) == 1  # one clip per video
        assert "per clip" in chart.text and not browser.find_elements(By.ID, "frame-chart")
        assert browser.find_element(By.ID, "decision").text in {"FAKE", "REAL"}
        browser.save_screenshot(str(tmp_path / "clip_chart.png"))
