"""Locates the official parity fixtures (read-only data beside the checkout)."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fixtures_dir():
    """``$YOLOR_FIXTURES`` or ``<repo>/../shared/fixtures``; fail on CI, else skip, if absent."""
    folder = pathlib.Path(os.environ.get("YOLOR_FIXTURES") or REPO.parent / "shared" / "fixtures")
    if not (folder / "tiny_input.npz").is_file():
        message = f"parity fixtures not found at {folder} (set $YOLOR_FIXTURES)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder
