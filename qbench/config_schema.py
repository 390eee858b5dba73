"""The config checked against its JSON schema, one short line per mistake.

jsonschema's own messages are long (the whole sub-schema, the instance path as Python
indexing); a user needs the key, what is wrong and what is allowed:
`config key dtypes.w8a8.scheme: 'w4a16' is not one of ['fp16', 'bf16', ...]`.
This module imports neither torch nor Snakemake, so a mistake is reported in seconds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:  # imported where a schema is checked: reading a config (a job, a script on the GPU) needs no jsonschema
    import jsonschema

TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "a mapping (key: value)",
    "boolean": "true or false",
    "null": "null",
}


class ConfigError(ValueError):
    """A user's mistake in the config: one line per problem, each naming the key and what
    is allowed. `source` says where the config came from (a file, the command line)."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(format_problems(self.problems, source))


def key_path(path) -> str:
    """['dtypes', 'w8a8', 'scheme'] -> 'dtypes.w8a8.scheme'; list items as batch_sizes[1]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _type_names(t) -> str:
    types = t if isinstance(t, list) else [t]
    return " or ".join(TYPE_NAMES.get(x, x) for x in types)


def describe(error: jsonschema.ValidationError) -> list[str]:
    """One line per mistake in one schema error, naming the key path and what is allowed."""
    return [line for line in _describe(error) if line]


def _describe(error: jsonschema.ValidationError) -> list[str]:
    key = key_path(error.absolute_path)
    v, arg, value = error.validator, error.validator_value, error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        where = f"{key}." if key else ""
        return [f"config key {where}{name}: not a known key; allowed: {allowed}" for name in extra]
    where = f"config key {key}" if key else "config"
    if v == "enum":
        return [f"{where}: {value!r} is not one of {arg}"]
    if v == "type":
        return [f"{where}: must be {_type_names(arg)}, got {value!r}"]
    if v == "required":
        missing = [k for k in arg if k not in value]
        return [f"config key {key}.{k}: required but missing" for k in missing]
    if v == "minimum":
        return [f"{where}: must be >= {arg}, got {value!r}"]
    if v == "exclusiveMinimum":
        return [f"{where}: must be > {arg}, got {value!r}"]
    if v == "maximum":
        return [f"{where}: must be <= {arg}, got {value!r}"]
    if v == "exclusiveMaximum":
        return [f"{where}: must be < {arg}, got {value!r}"]
    if v == "minItems":
        return [f"{where}: needs at least {arg} item(s), got an empty list"]
    if v == "minProperties":
        return [f"{where}: needs at least {arg} entry, got none"]
    if v == "uniqueItems":
        dupes = []  # values may be unhashable (lists), so no set
        for i, x in enumerate(value):
            if x in value[:i] and x not in dupes:
                dupes.append(x)
        return [f"{where}: duplicate values {dupes}; give each value once"]
    if v == "pattern":
        return [f"{where}: name {value!r} must start with a letter or digit and hold only letters, digits, _ . -"]
    return [f"{where}: {error.message}"]


def load_schema(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Every mistake in `config` against `schema`, one line each, sorted by key. The
    config is not changed (defaults are filled by whoever validates afterwards)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for e in errors for line in describe(e)]


def check_config(config: dict, schema_path: str | os.PathLike, source: str | None = None) -> None:
    """Raise ConfigError listing every schema mistake, or return quietly."""
    problems = schema_problems(config, load_schema(schema_path))
    if problems:
        raise ConfigError(problems, source)


def format_problems(problems: list[str], source: str | None = None) -> str:
    where = f" ({source})" if source else ""
    return f"invalid config{where}:\n" + "\n".join(problems)
