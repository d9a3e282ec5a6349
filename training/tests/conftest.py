import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
REPO = os.path.dirname(ROOT)
CACHE = os.environ.get("VILD_CACHE", os.path.join(REPO, ".cache"))


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return CACHE
