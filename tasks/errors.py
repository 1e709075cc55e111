"""The pipeline's expected errors: bad input, a damaged store, an unreachable service.

All derive from ``prolab_models.errors.ProLabError`` (one base for the whole project, one
layer down), so the CLI recognises every expected error by its class.
"""

from __future__ import annotations

from prolab_models.errors import ProLabError

__all__ = ["ArtifactError", "MissingUpstreamError", "ProLabError", "UserError"]


class UserError(ProLabError):
    """Bad input noticed by the command line itself (a missing path, an unreadable option)."""


class ArtifactError(ProLabError, RuntimeError):
    """A stored artifact is missing, incomplete or does not match its manifest, or the store cannot be reached."""


class MissingUpstreamError(ProLabError, RuntimeError):
    """A single stage was asked for before the stage it reads from has run."""
