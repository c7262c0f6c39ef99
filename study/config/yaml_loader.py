"""YAML as study files and ``--set`` values are read: safe, with YAML 1.2's plain scalars.

PyYAML implements YAML 1.1, where ``off``, ``on``, ``yes``, ``no`` (and ``y``, ``n``) are
booleans, ``1e-3`` is a string, ``010`` is octal 8, ``1:30`` is 90 and ``2021-02-11`` a date.
So ``--set sam.mode=off`` arrived as ``False`` and an arm named ``off`` as a boolean key.
This loader keeps PyYAML's safe constructors (no Python objects, ever) and resolves plain
scalars by the YAML 1.2 core schema instead: booleans are only ``true``/``false``, numbers
are decimal (``0o``/``0x`` prefixes aside) with exponents allowed, and nothing is a date.
A boolean key still accepts ``on``/``off``/``yes``/``no``: the config validates the string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from study.errors import ConfigError

_BOOL, _INT, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Yaml12Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the YAML 1.2 core schema's implicit booleans, ints and floats."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                    list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "010" is ten (YAML 1.1: eight)


_Yaml12Loader.add_constructor(_INT, _construct_int)


def load_yaml(text: str) -> Any:
    """Parse one YAML document safely, with YAML 1.2 plain scalars (``off`` is a string).

    Raises:
        yaml.YAMLError: the text is not valid YAML.
    """
    loader = _Yaml12Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a UTF-8 YAML file that must hold a mapping; every error names the file.

    Raises:
        ConfigError: unreadable, not UTF-8, broken YAML, or not a mapping.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                          "save the file as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: broken YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data
