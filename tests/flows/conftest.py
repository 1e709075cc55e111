"""Fixtures of the flow tests: the demo dataset and one ``prolab demo`` run shared by the
deployment and UI tests (one worker, one deploy, one first run per session)."""

from tests.helpers.demo_runs import demo_root  # noqa: F401  (fixtures)
from tests.helpers.prefect_runs import demo_run  # noqa: F401
