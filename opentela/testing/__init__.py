"""Test doubles shipped with the package, never used by the product by default."""
