"""Fixtures of the auth tests (the world itself is in ``world_helpers``)."""

from world_helpers import world  # noqa: F401 (a fixture)
