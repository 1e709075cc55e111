"""The ``prolab`` Prefect profile: saved where the user's ``prefect`` command reads profiles, and
nothing else of theirs changed (README's lines run end to end in test_readme_prefect.py)."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from flows.prefect_profile import PROFILE, save_profile, user_profiles_file

THEIRS = '# mine\nactive = "team"\n\n[profiles.team]\nPREFECT_API_URL = "https://prefect.example.org/api"\n'


@pytest.mark.parametrize("environ", [{}, {"PREFECT_HOME": "/srv/prefect-home"},
                                     {"PREFECT_HOME": "/srv/x", "PREFECT_PROFILES_PATH": "/srv/profiles.toml"}])
def test_the_profiles_file_is_the_one_prefect_reads(environ: dict[str, str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("PREFECT_HOME", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert user_profiles_file(environ | {"HOME": str(tmp_path)}) == Settings().profiles_path


def test_the_profile_is_written_once_and_again_only_when_the_server_moves(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    save_profile("http://127.0.0.1:4200/api", profiles)
    ours = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    assert tomllib.loads(profiles.read_text()) == {"profiles": {PROFILE: ours}}
    assert profiles.stat().st_mode & 0o077 == 0, "readable by its owner only, as Prefect makes it"

    profiles.write_text(THEIRS + f'\n[profiles.{PROFILE}]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    before = profiles.read_bytes()
    save_profile("http://127.0.0.1:4200/api", profiles)
    assert profiles.read_bytes() == before, "unchanged: not rewritten (comments and all)"

    save_profile("http://127.0.0.1:4300/api", profiles)
    theirs = tomllib.loads(THEIRS)
    assert tomllib.loads(profiles.read_text()) == {
        **theirs, "profiles": {**theirs["profiles"], PROFILE: {"PREFECT_API_URL": "http://127.0.0.1:4300/api"}}}


def test_a_profiles_file_that_is_not_toml_is_left_alone_with_a_warning(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text("active = \n[profiles\n")
    with caplog.at_level(logging.WARNING):
        save_profile("http://127.0.0.1:4200/api", profiles)
    assert profiles.read_text() == "active = \n[profiles\n"
    assert f"{profiles}: not a Prefect profiles file" in caplog.text and "PREFECT_API_URL=http" in caplog.text
