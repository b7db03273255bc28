"""The two errors of a project: ConfigError for its configuration file, ProjectError for everything else."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration file is invalid; str() is the complete message, naming file, API and key."""


class ProjectError(Exception):
    """A problem with the project other than its configuration (files, size, `.env`, bundle)."""
