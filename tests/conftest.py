"""Session-wide settings (offline model loading, no analytics) and the fixtures of tests/helpers/,
registered here once for every test directory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = [
    "tests.helpers.prefect_server",  # prefect_server, env, cli_env
    "tests.helpers.demo_runs",  # demo_root, demo_label_space, trained_run
    "tests.helpers.transfer_runs",  # transfer_store, described_label_space, described_run, held_out_run
    "tests.helpers.prefect_runs",  # demo_run
    "tests.helpers.extension",  # extension, csrc_copy
]
