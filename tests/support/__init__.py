"""Helpers shared by the tests. Test modules import from here, never from conftest files
or from other test modules."""
