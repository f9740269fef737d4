import os
import sys
import tempfile
from pathlib import Path

# Hypothesis keeps caches in ./.hypothesis; keep them out of the working tree.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ringmaster-hypothesis")
)

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
