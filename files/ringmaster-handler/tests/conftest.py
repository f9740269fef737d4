import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

FIXTURES = HERE / "fixtures"


@pytest.fixture
def fixture_bytes():
    def load(name: str) -> bytes:
        return (FIXTURES / f"{name}.bin").read_bytes()

    return load


# No example database or pytest cache files in the working tree.
try:
    from hypothesis import settings

    settings.register_profile("ringmaster", database=None)
    settings.load_profile("ringmaster")
except ImportError:  # pragma: no cover
    pass
