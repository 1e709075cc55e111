"""Tools for datasets prepared by hand: see data/README.md."""
