"""Fixtures of the flow tests: the demo dataset, one ``prolab demo`` run shared by the
deployment and UI tests (one worker, one deploy, one first run per session), and the
environment of the CLI tests."""

import pytest

from tests.helpers.demo_runs import demo_root  # noqa: F401  (fixtures)
from tests.helpers.prefect_runs import demo_run  # noqa: F401


@pytest.fixture(scope="module")
def env(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ``prolab`` command's environment: the session's Prefect server, a store per module."""
    return {**prefect_server, "PROLAB_ARTIFACTS": str(tmp_path_factory.mktemp("store")), "HF_HUB_OFFLINE": "1"}
