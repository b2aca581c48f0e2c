"""Shared fixtures: where the real data lives, and skipping cleanly without it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (see README: tests and real data)")
    return SHARED_DATA


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data file not found: {path}")
    return path
