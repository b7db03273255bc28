"""Projects: parse the API configuration file, read `.env`, and package the project's files.

The modules, and what each holds:

- `config`: finding the configuration file (`find_config`) and parsing it (`parse_config`, `ParsedConfig`).
- `api`: one API entry: name, kind and the small sections; `handler`, `compute` and `autoscaling`: those
  sections (`replica_holds_at_most` is autoscaling's); `fields`: `FieldReader`, which reads an entry's keys
  and words their errors.
- `yamlload`: the YAML loader and its size limit (`MAX_CONFIG_EXPANDED_BYTES`).
- `units`: durations, memory quantities and byte counts (`parse_duration`, `parse_quantity_bytes`,
  `human_size`).
- `messages`: how messages name the values they refuse.
- `dotenv`: `.env` (`parse_dotenv`) and the variables a project may not set (`reserved_env_problem`).
- `files`: which files a bundle holds (`collect_files`, `.cortexignore`) and `check_project_files`.
- `bundle`: packing and unpacking bundles (`pack_project`, `unpack_bundle`, `MAX_PROJECT_BYTES`,
  `MAX_BUNDLE_MEMBERS`).
- `errors`: `ConfigError` and `ProjectError`.
"""

from __future__ import annotations

from cortado.project.autoscaling import replica_holds_at_most
from cortado.project.bundle import MAX_BUNDLE_MEMBERS, MAX_PROJECT_BYTES, pack_project, unpack_bundle
from cortado.project.config import CONFIG_NAMES, ParsedConfig, find_config, parse_config
from cortado.project.dotenv import DOTENV_FILE, parse_dotenv, reserved_env_problem
from cortado.project.errors import ConfigError, ProjectError
from cortado.project.files import IGNORE_FILE, check_project_files, collect_files
from cortado.project.units import human_size, parse_duration, parse_quantity_bytes
from cortado.project.yamlload import MAX_CONFIG_EXPANDED_BYTES

__all__ = [
    "CONFIG_NAMES",
    "DOTENV_FILE",
    "IGNORE_FILE",
    "MAX_BUNDLE_MEMBERS",
    "MAX_CONFIG_EXPANDED_BYTES",
    "MAX_PROJECT_BYTES",
    "ConfigError",
    "ParsedConfig",
    "ProjectError",
    "check_project_files",
    "collect_files",
    "find_config",
    "human_size",
    "pack_project",
    "parse_config",
    "parse_dotenv",
    "parse_duration",
    "parse_quantity_bytes",
    "replica_holds_at_most",
    "reserved_env_problem",
    "unpack_bundle",
]
