import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
# The console imports the handler package's CURVE key files and ZAP gate.
sys.path[:0] = [str(PACKAGE / "src"), str(PACKAGE.parent / "ringmaster-handler" / "src"), str(HERE)]
# Last: the handler's test harness (a real Mongrel2 and dispatcher) for test_requests.py.
sys.path.append(str(PACKAGE.parent / "ringmaster-handler" / "tests"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    """One real circusd and agent for the integration and browser tests."""
    from stack import Stack

    s = Stack()
    try:
        s.start_circusd()
        s.start_agent()
        yield s
    finally:
        s.close()
