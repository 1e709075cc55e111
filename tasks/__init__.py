"""The pipeline's stages: plain typed functions, the artifact store, and their Prefect tasks."""
