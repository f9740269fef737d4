"""The console in a real browser: Debian's headless Chromium, driven by Selenium, against the
console served over HTTP by a real server, a real agent and a real circusd.

Screenshots go to $RINGMASTER_CONSOLE_SCREENSHOTS when it is set (docs/images for the README:
see docs/console.md), else to the scratch directory.
"""

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from ringmaster_console.web import app_from_file
from stack import PASSWORD, Paced, console_toml, wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.fail(
        "Debian's chromium and chromium-driver are needed: bash tools/bootstrap.sh installs them"
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def console(stack, front_agent):
    # Plain HTTP on loopback (the cookie's Secure flag is tested in test_web.py). The front
    # runs Mongrel2 and the app's dispatcher; worker2 never answers.
    hosts = [
        stack.host("front", port=front_agent),
        stack.host("worker1"),
        stack.host("worker2", port=1),
    ]
    config = console_toml(stack, hosts, https=False)
    app = app_from_file(str(config))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.extensions["ringmaster_fleet"].close()


@pytest.fixture(scope="module")
def browser(stack):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1250",
        f"--user-data-dir={stack.dir}/chromium",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(browser, stack, name):
    where = Path(os.environ.get("RINGMASTER_CONSOLE_SCREENSHOTS") or stack.dir)
    where.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(where / f"console-{name}.png"))


def series(browser, key, first="cpu", second="rss"):
    """The labels and data of a pair of charts (a single one: the second is empty)."""
    return browser.execute_script(
        "const c = window.ringmaster.charts[arguments[0]], a = arguments[1], b = arguments[2];"
        "return c ? {labels: c[a].data.labels.length,"
        " cpu: c[a].data.datasets.map(d => d.data.slice()),"
        " rss: c[b] ? c[b].data.datasets.map(d => d.data.slice()) : []} : null;",
        key,
        first,
        second,
    )


def polls(browser):
    return browser.execute_script("return window.ringmaster ? window.ringmaster.polls : 0;")


def test_console_in_a_browser(stack, front, console, browser):
    wait = WebDriverWait(browser, 20)
    traffic = Paced(front[0].m2.port, rate=40).start()
    browser.get(console + "/")
    assert browser.current_url.endswith("/login")

    # A wrong password is refused.
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "login").click()
    wait.until(lambda b: b.find_elements(By.ID, "message"))
    assert browser.find_element(By.ID, "message").text == "Wrong password."
    assert browser.current_url.endswith("/login")
    shot(browser, stack, "login")

    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait.until(lambda b: polls(b) >= 3)

    # The graphs move: a point a second for each process, CPU and RSS.
    first = series(browser, "worker1/shop")
    wait_for(lambda: polls(browser) >= 7, 15, "four more polls")
    later = series(browser, "worker1/shop")
    assert later["labels"] >= first["labels"] + 3
    assert len(later["cpu"]) == len(stack.pids("shop")) == 2
    for cpu, rss in zip(later["cpu"], later["rss"], strict=True):
        recent_cpu = [v for v in cpu[-4:] if v is not None]
        assert recent_cpu and max(recent_cpu) > 0, cpu
        assert all(v is not None and v > 5 for v in rss[-4:]), rss
    # The host that does not answer is shown down, the other one still up.
    assert "down" in browser.find_element(By.CSS_SELECTOR, "#host-worker2 .state").text
    assert browser.find_element(By.CSS_SELECTOR, "#host-worker1 .state").text == "up"
    # The app's requests, from the front's dispatcher: about 40 a second, all 2xx.
    cell = '#requests tr[data-key="shop@front"] td:nth-child(3)'
    no_rate_yet = "\u2013"  # the page's dash before two samples
    wait.until(
        lambda b: float(b.find_element(By.CSS_SELECTOR, cell).text.replace(no_rate_yet, "0")) > 10
    )
    wait_for(lambda: len(series(browser, "shop@front", "requests")["cpu"]) == 4, 5, "the chart")
    shot(browser, stack, "overview")
    traffic.stop()
    assert traffic.ok == traffic.sent > 0

    # Scale from the page, with the confirmation step.
    before = stack.pids("shop")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-app="shop"]')
    row.find_element(By.NAME, "count").send_keys("4")
    row.find_element(By.CSS_SELECTOR, 'button[data-op="scale"]').click()
    wait.until(lambda b: b.find_elements(By.ID, "describe"))
    assert (
        "Set shop to 4 processes in all (worker1: 4)?"
        in browser.find_element(By.ID, "describe").text
    )
    assert stack.pids("shop") == before
    shot(browser, stack, "confirm")
    browser.find_element(By.ID, "confirm").click()
    wait.until(lambda b: b.find_elements(By.ID, "results"))
    assert browser.find_element(By.TAG_NAME, "h2").text == "Done"
    after = stack.pids("shop")
    assert len(after) == 4 and set(before) <= set(after)
    assert ", ".join(map(str, after)) in browser.find_element(By.ID, "results").text
    shot(browser, stack, "result")

    # Back on the page, the new processes appear, in the table and in the graphs.
    browser.find_element(By.ID, "back").click()
    wait.until(
        lambda b: (
            b.find_element(By.CSS_SELECTOR, '#host-worker1 tr[data-watcher="shop"] td.count').text
            == "4 / 4"
        )
    )
    wait_for(
        lambda: len(series(browser, "worker1/shop")["rss"]) == 4, 10, "four processes in the graph"
    )

    # A POST without the CSRF token, from the logged-in page itself, is refused.
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const body = new URLSearchParams({op: 'scale', watcher: 'shop', count: '1'});"
        "fetch('/act', {method: 'POST', body}).then(r => done(r.status));"
    )
    assert status == 400
    time.sleep(0.5)
    assert stack.pids("shop") == after

    # Put the fleet back as the other tests expect it.
    fleet = stack.fleet()
    try:
        assert fleet.act({"local": {"op": "scale", "watcher": "shop", "count": 2}}, timeout=40)[0][
            "up"
        ]
    finally:
        fleet.close()
