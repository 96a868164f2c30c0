"""Store tests (a package, so tests/store/conftest.py is not the ``conftest`` module that
tests/integration imports names from)."""
