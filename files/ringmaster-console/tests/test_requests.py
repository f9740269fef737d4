"""The apps' request numbers on the console: a real Mongrel2, a real dispatcher with its
/metrics page and real handlers (the handler package's test harness), read by a real agent
over CURVE, rated by the console's JSON feed."""

import time

from ringmaster_console.web import app_from_file
from stack import PASSWORD, Paced, console_toml, wait_for

BASE = "https://console.test"


def test_request_numbers_on_the_console(stack, front, front_agent):
    m2, _ = front
    config = console_toml(stack, [stack.host("front", port=front_agent)])
    app = app_from_file(str(config))
    client = app.test_client()
    page = client.get("/login", base_url=BASE).get_data(as_text=True)
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    client.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": token},
        base_url=BASE,
        headers={"Referer": f"{BASE}/login"},
    )

    def shop():
        host = client.get("/api/status", base_url=BASE).get_json()["hosts"][0]
        assert host["up"], host
        return host["apps"]["shop"]

    first = shop()
    assert first["per_second"] is None  # nothing to rate against yet
    # The page is as of the recorder's last batch: a second old at most when idle.
    wait_for(lambda: shop()["handlers_connected"] == 2, 5, "both handlers on the page")
    assert shop()["queue_depth"] == 0
    load = Paced(m2.m2.port, rate=50).start()
    time.sleep(1.0)
    shop()
    # Two seconds between these polls: a count not divided by the time would show 100.
    time.sleep(2.0)
    during = shop()
    result = load.stop()
    assert result.ok == result.sent > 50
    # 50 a second, give or take what a busy machine does to the pace and the 50 ms batches.
    assert 25 < during["per_second"]["2xx"] < 75, during
    assert during["per_second"]["5xx"] == 0
    assert during["p50_ms"] is not None and during["p50_ms"] <= during["p99_ms"]
    assert m2.get("/status?code=503")[0] == 503
    time.sleep(0.3)  # the recorder's page follows within 50 ms
    after = shop()
    assert after["totals"]["503"] == 1
    assert after["requests"] == result.sent + 1
    app.extensions["ringmaster_fleet"].close()
