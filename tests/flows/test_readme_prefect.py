"""README's Prefect lines, run as a new user runs them after ``make demo``: copied in order into a
new shell whose environment holds nothing of the project's, against a real server and real
deployments; and the user's own Prefect profiles left as they were."""

from __future__ import annotations

import re
import subprocess
import tomllib
import urllib.request
from pathlib import Path

from flows.prefect_profile import PROFILE
from tasks.processes import free_port
from tests.helpers.cli import PROJECT_ROOT, PROLAB
from tests.helpers.prefect_runs import api, run_command

# A user's profiles file before they meet this project: a team server, active, and a comment.
USER_PROFILES = """# my team's server
active = "team"

[profiles.team]
PREFECT_API_URL = "https://prefect.example.org/api"
"""


def readme_prefect_lines() -> list[str]:
    """The README's code block that starts using the ``prefect`` command, line by line."""
    blocks = re.findall(r"```bash\n(.*?)```", (PROJECT_ROOT / "README.md").read_text(), re.DOTALL)
    (block,) = [block for block in blocks if f"prefect profile use {PROFILE}" in block]
    return block.strip().splitlines()


def in_new_shell(env: dict[str, str], lines: list[str]) -> subprocess.CompletedProcess[str]:
    """``lines`` in one bash from the checkout, stopping at the first that fails."""
    return subprocess.run(["bash", "-e", "-c", "\n".join(lines)], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_readmes_prefect_lines_reach_the_projects_server_and_stop_leaves_the_users_profiles(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    profiles = home / ".prefect" / "profiles.toml"
    profiles.parent.mkdir(parents=True)
    profiles.write_text(USER_PROFILES)
    port = free_port()  # the README's 4200 may be someone's: the one difference from the README's world
    shell = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PROLAB_PREFECT_HOME": str(tmp_path / "prefect"),
             "PROLAB_PREFECT_PORT": str(port)}
    server = {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    *lines, stop = readme_prefect_lines()
    assert stop.startswith("prolab server stop")
    try:
        for step in (["server", "start"], ["deploy"]):  # what `make demo` leaves: the server, the deployments
            result = run_command(shell, PROLAB, *step)
            assert result.returncode == 0, result.stderr[-3000:]
        saved = tomllib.loads(profiles.read_text())
        assert saved["profiles"] == {"team": {"PREFECT_API_URL": "https://prefect.example.org/api"},
                                     PROFILE: server} and saved["active"] == "team"

        shown = in_new_shell(shell, lines)
        assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
        with api(server) as client:  # the runs the two `prefect deployment run` lines created
            runs = {client.read_deployment(run.deployment_id).name: run.parameters for run in client.read_flow_runs()}
        assert runs == {"end-to-end": {"params": {"label_space": {"cluster": {"k": 8}}}},
                        "cluster": {"params": {"label_space": {"cluster": {"k": 24}}}}}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=10) as page:  # the UI, at the README's address
            assert page.status == 200 and "<html" in page.read().decode().lower()

        chosen = profiles.read_bytes()  # the user's own `prefect profile use prolab` made it active
        assert tomllib.loads(chosen.decode())["active"] == PROFILE
        stopped = in_new_shell(shell, [lines[0], stop])
        assert stopped.returncode == 0 and "stopped" in stopped.stderr, stopped.stderr[-3000:]
        assert profiles.read_bytes() == chosen, "prolab server stop leaves the profiles file as it was"
        assert run_command(shell, PROLAB, "server", "status").stdout.strip().endswith("down")
    finally:
        run_command(shell, PROLAB, "server", "stop")
