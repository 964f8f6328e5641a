"""Locates the official reference files (read-only data beside the checkout)."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def shared_folder(name, variable):
    """``$variable`` or ``<repo>/../shared/<name>``; fail on CI, else skip, if absent."""
    folder = pathlib.Path(os.environ.get(variable) or REPO.parent / "shared" / name)
    if not folder.is_dir():
        message = f"shared {name} folder not found at {folder} (set ${variable})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture
def reference_dir():
    return shared_folder("reference", "YOLOR_REFERENCE")


@pytest.fixture
def fixtures_dir():
    return shared_folder("fixtures", "YOLOR_FIXTURES")
