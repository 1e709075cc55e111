"""The pipeline's stages: plain typed functions, the artifact store, and their Prefect tasks."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout: prefect.yaml, .prefect/, the sources
