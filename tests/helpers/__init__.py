"""What the tests share: fixtures (registered once, by ``pytest_plugins`` in tests/conftest.py)
and plain helpers that tests import (``from tests.helpers.cli import prolab``)."""
