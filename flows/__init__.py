"""Prefect flows over the stages in ``tasks``, and the ``prolab`` command line."""
