"""Shared fixtures: where the real data and weights are, and how a test requests them.

Real-data tests read PIRE_DATA_ROOT and PIRE_WEIGHTS_DIR. When a variable is unset the
test is skipped (a developer machine without the material). When it is set, as in CI,
a missing folder or file fails the test instead, so that lost material never turns a
red run green.
"""

import os

import pytest

from pire_jax.datasets import DATA_ROOT_ENV, WEIGHTS_DIR_ENV


def _material_folder(variable: str) -> str:
    folder = os.environ.get(variable)
    if not folder:
        pytest.skip(f"{variable} is not set, so the tests on real material are skipped.")
    if not os.path.isdir(folder):
        pytest.fail(f"{variable}={folder} does not exist. Point it at the shared data or unset it.")
    return folder


@pytest.fixture(scope="session")
def data_root() -> str:
    """The real datasets folder (PIRE_DATA_ROOT)."""
    return _material_folder(DATA_ROOT_ENV)


@pytest.fixture(scope="session")
def weights_dir() -> str:
    """The real weights folder (PIRE_WEIGHTS_DIR)."""
    return _material_folder(WEIGHTS_DIR_ENV)


def require_file(folder: str, *relative: str) -> str:
    """Return `folder/relative...`, failing the test when the file or folder is missing."""
    path = os.path.join(folder, *relative)
    if not os.path.exists(path):
        pytest.fail(f"Required real material is missing: {path}.")
    return path


@pytest.fixture
def real_file():
    """The `require_file` helper as a fixture, for tests that prefer injection to import."""
    return require_file
