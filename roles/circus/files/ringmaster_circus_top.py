# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""circus-top (circus 0.19) whose screen keeps refreshing.

circus-top paints from a thread while its main thread stores the statistics circusd-stats streams.
When a watcher's per-process figures arrive before its totals, circus 0.19's painter unpacks a
four-item placeholder into five names (ValueError) and the painting thread dies: the screen stays
frozen at "Waiting for data" although circus-top keeps running. The shared dictionary can also change
size while it is painted. This runs circus-top with a painter that skips such a frame and paints again
a second later, by which time the totals are there.

Usage: python -m ringmaster_circus_top [circus-top options]
"""

from __future__ import annotations

import contextlib
import time

from circus.stats import client


def _run(self):
    self.running = True
    while self.running:
        # An incomplete or changing frame is skipped; the next one is complete.
        with contextlib.suppress(ValueError, RuntimeError):
            self.h, self.w = client._paint(self.screen, self.watchers, self.h, self.w)
        time.sleep(1.0)


client.Painter.run = _run

if __name__ == "__main__":
    client.main()
