# The two commands of the README. Both set up .venv/ first (idempotent, fast when done).
.PHONY: demo test setup setup-test stop

demo: setup
	@.venv/bin/prolab demo

test: setup-test
	@.venv/bin/python -m pytest

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

stop:
	@.venv/bin/prolab server stop
