"""Reading a configuration file's YAML: safe types only, timestamps kept as text, and a size limit that
counts YAML aliases expanded before any of them is."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from cortado.project.errors import ConfigError
from cortado.project.units import human_size

MAX_CONFIG_EXPANDED_BYTES = 4 * 1024 * 1024
"""Largest configuration file once YAML aliases are expanded (each value: one plus the length of its text)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as the strings they were written as.

    Cortex (Go) read unquoted dates in `handler.config` as strings; PyYAML would make datetime objects that
    JSON cannot hold.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """The integer, or a ConstructorError naming its line when it has more digits than Python reads."""
    try:
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))
    except ValueError:  # past Python's int-to-str digit limit
        digits = sys.get_int_max_str_digits()
        problem = f"an integer of more than {digits} digits cannot be read; quote it to keep it as text"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _expanded_size(root: yaml.Node, filename: str) -> tuple[int, bool]:
    """(size of the document with every alias expanded, whether it uses aliases), before anything is built.

    Each node counts one plus the length of its text, and an aliased node counts again each time an alias repeats
    it, so `&a [..]`, `*a`, `*a` ... nested a few levels deep (a "billion laughs") is measured without being expanded.
    Raises ConfigError for an alias inside the node it refers to (a configuration cannot contain itself).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliased = False

    def size(node: yaml.Node) -> int:
        nonlocal aliased
        key = id(node)
        if key in sizes:
            aliased = True
            return sizes[key]
        if key in active:
            raise ConfigError(
                f"{filename}: line {node.start_mark.line + 1}: an alias refers to a value that contains it; "
                "a configuration cannot contain itself"
            )
        active.add(key)
        if isinstance(node, yaml.ScalarNode):
            total = 1 + len(node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        return total

    return size(root), aliased


def load_yaml(text: bytes | str, filename: str) -> Any:
    """The YAML document (None when empty), its size checked with aliases expanded before any Python object is built.

    Only YAML's plain types are built (a SafeLoader), timestamps as strings. Raises ConfigError when the
    expanded document is over MAX_CONFIG_EXPANDED_BYTES or an alias is inside the value it names, and lets
    yaml.YAMLError (invalid YAML) and RecursionError (nested too deeply) through for the caller to word.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size, aliased = _expanded_size(node, filename)
        if size > MAX_CONFIG_EXPANDED_BYTES:
            limit = human_size(MAX_CONFIG_EXPANDED_BYTES)
            if aliased:
                raise ConfigError(
                    f"{filename}: YAML aliases (*name) expand the configuration to more than {limit}, the limit "
                    "(an alias counts the whole value it repeats, each time it is used); write the values out, or "
                    "keep large data in a file of the project"
                )
            raise ConfigError(
                f"{filename}: the configuration is larger than {limit}, the limit; keep large data in a file of the "
                "project"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
