"""Helpers the tests import (``from tests.support.factories import ...``); fixtures live in tests/conftest.py."""
