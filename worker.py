"""Dramatiq entry file for running from a checkout: ``dramatiq worker`` at the repository root.

The installed package runs :mod:`sync.engine.workers` instead (``calsync worker``); this
file is not installed, so installing calsync adds no top-level ``worker`` module.
"""

from sync.engine.workers import broker  # noqa: F401  (declares the actors, installs the broker in this process)
