"""A watcher's process for the tests: uses a little CPU and a slowly changing amount of memory,
so the console's graphs have something to show (about 5 % of a core)."""

import time

hold = []
while True:
    end = time.monotonic() + 0.005
    while time.monotonic() < end:
        pass
    hold.append(bytearray(64 * 1024))
    if len(hold) > 200:
        del hold[:150]
    time.sleep(0.095)
