"""The configuration file: finding cortado.yaml (or Cortex's cortex.yaml) and parsing its list of APIs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cortado import webhooks
from cortado.project.api import parse_api
from cortado.project.errors import ConfigError, ProjectError
from cortado.project.fields import FieldReader
from cortado.project.messages import one_line, type_name
from cortado.project.yamlload import load_yaml
from cortado.v1 import control_pb2

CONFIG_NAMES = ("cortado.yaml", "cortex.yaml")


@dataclass(frozen=True)
class ParsedConfig:
    """The APIs of a configuration file, defaults applied, and notices about accepted-but-ignored keys."""

    apis: list[control_pb2.ApiSpec]
    notices: list[str]


def find_config(project_dir: Path) -> Path:
    """Return the project's configuration file: the first of cortado.yaml, cortado.yml, cortex.yaml, cortex.yml.

    Raises ProjectError when the directory does not exist or holds none of them.
    """
    if not project_dir.is_dir():
        raise ProjectError(f"{project_dir} is not a directory")
    for name in CONFIG_NAMES:
        stem = name.removesuffix(".yaml")
        for candidate in (name, f"{stem}.yml"):
            path = project_dir / candidate
            if path.is_file():
                return path
    raise ProjectError(f"no {' or '.join(CONFIG_NAMES)} found in {project_dir}")


def parse_config(text: bytes | str, filename: str, webhook_policy: webhooks.UrlPolicy | None = None) -> ParsedConfig:
    """Parse a cortado.yaml / cortex.yaml (a YAML list of APIs) into ApiSpecs with every default applied.

    `filename` is only used in messages. Returns the APIs in file order (version, bundle and deploy time left
    unset) and notices about keys that are accepted but ignored. Raises ConfigError, whose message names the
    file, the API and the key path, for anything invalid. `webhook.url` must pass webhook_policy (the one the
    `CORTADO_WEBHOOK_*` settings make when None).
    """
    try:
        # load_yaml builds YAML's plain types only: no arbitrary Python objects.
        document = load_yaml(text, filename)
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: not valid YAML: {one_line(str(e))}") from e
    except RecursionError:
        raise ConfigError(f"{filename}: not valid YAML: it is nested too deeply") from None
    if document is None:
        raise ConfigError(f"{filename}: the file is empty; it must be a YAML list of APIs (`- name: ...`)")
    if isinstance(document, dict):
        raise ConfigError(
            f"{filename}: must be a YAML list of APIs, got a single mapping; start the API with `- ` (`- name: ...`)"
        )
    if not isinstance(document, list):
        raise ConfigError(f"{filename}: must be a YAML list of APIs, got {type_name(document)}")
    if not document:
        raise ConfigError(f"{filename}: the list of APIs is empty")

    apis: list[control_pb2.ApiSpec] = []
    notices: list[str] = []
    names: dict[str, int] = {}
    endpoints: dict[str, str] = {}
    for index, entry in enumerate(document):
        reader = FieldReader(filename, index, notices)
        spec = parse_api(reader, entry, webhook_policy)
        if spec.name in names:
            reader.fail("name", f"'{spec.name}' is already used by the API at index {names[spec.name]}")
        names[spec.name] = index
        if spec.endpoint in endpoints:
            reader.fail("networking.endpoint", f"'{spec.endpoint}' is already used by api '{endpoints[spec.endpoint]}'")
        endpoints[spec.endpoint] = spec.name
        apis.append(spec)
    return ParsedConfig(apis=apis, notices=notices)
