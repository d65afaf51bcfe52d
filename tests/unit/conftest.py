"""Fixtures shared by the unit tests; a test module's own fixture of the same name wins."""

from tests.unit.layertars import driver, store

__all__ = ["driver", "store"]
