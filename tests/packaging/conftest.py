from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.venvs import pip_install_checkout


@pytest.fixture(scope="session")
def compiled_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with this checkout pip-installed (compiled), made once for the session:
    test_install.py checks the install, test_deploy.py runs the deployment guide on it,
    and the session makes one mypyc build for both instead of two."""
    return pip_install_checkout(tmp_path_factory.mktemp("compiled-install"))
