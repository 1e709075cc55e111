"""The layers of pyproject.toml's import-linter contracts hold: packages import only those below
them, the model plugin's parts are independent, and no package's modules import in a cycle."""

from __future__ import annotations

import subprocess

from tests.helpers.cli import PROJECT_ROOT


def test_imports_keep_every_contract_of_pyproject_toml() -> None:
    result = subprocess.run([str(PROJECT_ROOT / ".venv" / "bin" / "lint-imports"), "--no-cache"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
