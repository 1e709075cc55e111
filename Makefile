# The two commands of the README. Both set up .venv/ first (idempotent, fast when done).
.PHONY: demo test setup setup-test stop

demo: setup
	@.venv/bin/prolab demo

# Test files run in TEST_WORKERS processes (pytest-xdist), each file whole in one (its module
# fixtures are built once); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: setup-test
	@.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

stop:
	@.venv/bin/prolab server stop
