"""The ``prolab`` Prefect profile: the user's ``prefect`` command pointed at the project's server.

``prolab`` pins the server's address in every process it starts, but a ``prefect`` command
typed in a shell reads its active profile instead, and Prefect's default profile starts a
throwaway ephemeral server that holds none of the project's deployments. So starting the
project's server saves a profile named ``prolab`` with its address in the user's profiles file,
and ``prefect profile use prolab`` (once) selects it. The file's other profiles, and which one
is active, stay as they were: the file is rewritten, as Prefect's own ``prefect profile``
commands rewrite it (its comments are not kept), only when the ``prolab`` profile changes.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path

import toml

from tasks.files import atomic_path

log = logging.getLogger(__name__)

PROFILE = "prolab"


def user_profiles_file(environ: Mapping[str, str]) -> Path:
    """Where the ``prefect`` command of a shell with ``environ`` reads its profiles, as Prefect
    resolves it: ``$PREFECT_PROFILES_PATH``, else ``$PREFECT_HOME/profiles.toml`` (``~/.prefect``)."""
    if environ.get("PREFECT_PROFILES_PATH"):
        return Path(environ["PREFECT_PROFILES_PATH"]).expanduser()
    return Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "profiles.toml"


def save_profile(api_url: str, profiles: Path) -> None:
    """Make ``profiles``'s ``prolab`` profile point at ``api_url``, creating the file if need be.

    A file that cannot be read as TOML is left alone with a warning: the server serves
    ``prolab`` either way, and the ``prefect`` command still reaches it through ``PREFECT_API_URL``.
    """
    wanted = {"PREFECT_API_URL": api_url}
    try:
        contents = tomllib.loads(profiles.read_text()) if profiles.exists() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        log.warning("%s: not a Prefect profiles file (%s); the %r profile is not saved: set "
                    "PREFECT_API_URL=%s for prefect commands", profiles, error, PROFILE, api_url)
        return
    if contents.get("profiles", {}).get(PROFILE) == wanted:
        return
    contents.setdefault("profiles", {})[PROFILE] = wanted
    with atomic_path(profiles) as partial:
        partial.touch(mode=0o600)  # as Prefect makes it: a profile may hold an API key
        partial.write_text(toml.dumps(contents))
    log.info("Prefect profile %r (PREFECT_API_URL=%s) saved in %s: `prefect profile use %s` points the prefect "
             "command at this server", PROFILE, api_url, profiles, PROFILE)
