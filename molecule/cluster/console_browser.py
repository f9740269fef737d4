"""The deployed console in a real browser (Debian's headless Chromium, Selenium), over HTTPS
through the front's TLS proxy and Mongrel2, with the sample app under a light load.

    RINGMASTER_CONSOLE_PASSWORD=... console_browser.py FRONT_ADDRESS CA_FILE SPKI_HASHES SHOTS_DIR HOST...

Logs in (a wrong password first), waits for every host to be shown up and for the app's graphs
and request numbers to move, scales the app from the page by two processes fleet-wide, and
sees the new processes answer requests. Prints what it saw as JSON; exits non-zero on the
first thing that is not as expected.
"""

import http.client
import json
import os
import re
import shutil
import ssl
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CONSOLE = "console.test"
APP = "app"
PID = re.compile(rb"pid (\d+)")


class Traffic:
    """GETs of the sample app over HTTPS at a light, steady rate, from a few connections; the
    handler PIDs that answered (the page's "/sleep" says which)."""

    def __init__(self, address: str, ca_file: str, connections: int = 4, rate: float = 10.0):
        self.address, self.every = address, 1.0 / rate
        self.context = ssl.create_default_context(cafile=ca_file)
        self.context.check_hostname = False  # (an address; the chain is still verified)
        self.sent = self.ok = 0
        self.pids: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(connections)]

    def start(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def run(self) -> None:
        conn = None
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(self.address, 443, timeout=10, context=self.context)
                conn.request("GET", "/sleep?seconds=0.05", headers={"Host": "localhost"})
                response = conn.getresponse()
                body = response.read()
                with self.lock:
                    self.sent += 1
                    if response.status == 200:
                        self.ok += 1
                        found = PID.search(body)
                        if found:
                            self.pids[int(found.group(1))] = time.monotonic()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.sent += 1
                if conn is not None:
                    conn.close()
                conn = None
            self.stop_event.wait(max(0.0, self.every - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)


def browser(address: str, spki: str, profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1250",
        f"--user-data-dir={profile}",
        # The console's name leads to the front; the lab CA is not in the browser's store, so
        # exactly the lab certificates' keys are accepted (their chain is verified by curl in
        # verify_proxy.yml).
        f"--host-resolver-rules=MAP {CONSOLE} {address}",
        f"--ignore-certificate-errors-spki-list={spki}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    return driver


def polls(b) -> int:
    return b.execute_script("return window.ringmaster ? window.ringmaster.polls : 0;")


def labels(b, key: str) -> tuple[int, list]:
    """Points so far and the CPU series of one chart pair (``host/watcher``)."""
    seen = b.execute_script(
        "const c = window.ringmaster.charts[arguments[0]];"
        "return c ? [c.cpu.data.labels.length, c.cpu.data.datasets.map(d => d.data.slice())] : null;",
        key,
    )
    return (seen[0], seen[1]) if seen else (0, [])


def count_of(b, host: str) -> tuple[int, int]:
    text = b.find_element(By.CSS_SELECTOR, f'#host-{host} tr[data-watcher="{APP}"] td.count').text
    running, wanted = (int(n) for n in text.split(" / "))
    return running, wanted


def check(condition: bool, what: str, seen: dict) -> None:
    if not condition:
        print(json.dumps(seen, default=str))
        sys.exit(f"console check failed: {what}")


def main() -> None:
    address, ca_file, spki, shots, *hosts = sys.argv[1:]
    password = os.environ["RINGMASTER_CONSOLE_PASSWORD"]
    workers = [h for h in hosts if "worker" in h]
    os.makedirs(shots, exist_ok=True)
    seen: dict = {}
    traffic = Traffic(address, ca_file).start()
    b = browser(address, spki, os.path.join(shots, "chromium-profile"))
    wait = WebDriverWait(b, 30)
    try:
        b.get(f"https://{CONSOLE}/")
        check(b.current_url.endswith("/login"), "the console asks for a login first", {"url": b.current_url})
        b.find_element(By.ID, "password").send_keys("not the password")
        b.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.ID, "message"))
        seen["wrong"] = b.find_element(By.ID, "message").text
        check(seen["wrong"] == "Wrong password.", "a wrong password is refused", seen)
        b.save_screenshot(os.path.join(shots, "console-login.png"))

        b.find_element(By.ID, "password").send_keys(password)
        b.find_element(By.ID, "login").click()
        wait.until(lambda d: polls(d) >= 3)
        seen["cookie_secure"] = all(c.get("secure") for c in b.get_cookies())
        check(seen["cookie_secure"], "the session cookie is Secure over HTTPS", seen)
        seen["states"] = {h: b.find_element(By.CSS_SELECTOR, f"#host-{h} .state").text for h in hosts}
        check(all(s == "up" for s in seen["states"].values()), "every host is up", seen)

        # The graphs move: a point a second per process; the workers' handlers use CPU.
        first = {w: labels(b, f"{w}/{APP}")[0] for w in workers}
        start = polls(b)
        wait.until(lambda d: polls(d) >= start + 4)
        later = {w: labels(b, f"{w}/{APP}") for w in workers}
        seen["points"] = {w: [first[w], later[w][0]] for w in workers}
        check(all(later[w][0] >= first[w] + 3 for w in workers), "the graphs gain a point a second", seen)
        recent = [v for w in workers for series in later[w][1] for v in series[-4:] if v is not None]
        seen["recent_cpu_max"] = max(recent, default=None)
        check(bool(recent) and max(recent) > 0, "the handlers' CPU graphs show the load", seen)
        # The app's requests, from the front's dispatcher metrics: the load's rate, all 2xx.
        cell = f'#requests tr[data-key="{APP}@{hosts[0]}"] td:nth-child(3)'
        wait.until(lambda d: float(d.find_element(By.CSS_SELECTOR, cell).text.replace("\u2013", "0") or 0) > 5)
        seen["rate"] = b.find_element(By.CSS_SELECTOR, cell).text
        b.save_screenshot(os.path.join(shots, "console-overview.png"))

        # Scale the app by two processes fleet-wide, from the page, confirming.
        before = {w: count_of(b, w) for w in workers}
        total = sum(wanted for _, wanted in before.values()) + 2
        row = b.find_element(By.CSS_SELECTOR, f'tr[data-app="{APP}"]')
        row.find_element(By.NAME, "count").send_keys(str(total))
        row.find_element(By.CSS_SELECTOR, 'button[data-op="scale"]').click()
        wait.until(lambda d: d.find_elements(By.ID, "describe"))
        seen["describe"] = b.find_element(By.ID, "describe").text
        check(f"Set {APP} to {total} processes in all" in seen["describe"], "the confirmation names the count", seen)
        b.save_screenshot(os.path.join(shots, "console-confirm.png"))
        pids_before = set(traffic.pids)
        asked = time.monotonic()
        b.find_element(By.ID, "confirm").click()
        WebDriverWait(b, 120).until(lambda d: d.find_elements(By.ID, "results"))
        seen["result_title"] = b.find_element(By.TAG_NAME, "h2").text
        seen["results"] = b.find_element(By.ID, "results").text
        check(seen["result_title"] == "Done", "the scale is done", seen)
        b.save_screenshot(os.path.join(shots, "console-result.png"))

        b.find_element(By.ID, "back").click()
        wait.until(lambda d: sum(count_of(d, w)[0] for w in workers) == total)
        seen["after"] = {w: count_of(b, w) for w in workers}

        # The new processes serve: PIDs not seen before answer the load.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with traffic.lock:
                new = {pid for pid, at in traffic.pids.items() if pid not in pids_before and at > asked}
            if len(new) >= 2:
                break
            time.sleep(0.5)
        seen["new_pids_serving"] = sorted(new)
        check(len(new) >= 2, "the two new processes answer requests", seen)

        # A POST without the form's CSRF token, from the logged-in page itself, is refused.
        seen["csrf_less_post"] = b.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const body = new URLSearchParams({op: 'scale', watcher: arguments[0], count: '1'});"
            "fetch('/act', {method: 'POST', body}).then(r => done(r.status));",
            APP,
        )
        check(seen["csrf_less_post"] == 400, "a POST without the CSRF token is refused", seen)
    finally:
        b.quit()
        traffic.stop()
    seen["traffic"] = {"sent": traffic.sent, "ok": traffic.ok}
    check(traffic.ok == traffic.sent > 0, "every request of the load was answered 200", seen)
    print(json.dumps(seen, default=str))


if __name__ == "__main__":
    main()
