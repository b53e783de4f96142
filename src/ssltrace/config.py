"""Study configuration: its shape, documentation and defaults (the schema), merging, validation.

The JSON schema shipped with the package (`schemas/config.schema.yaml`) is the one source of
the config's shape, of each key's meaning and of its default (`defaults()` collects them).
`validate` checks a config against it with messages that name the key and fills the
defaults. What a schema cannot express (names against the registries, sizes against the
dataset, each component's own keys) is checked by `ssltrace.checks`; what each run and stage
needs is resolved by `ssltrace.study`. This module imports no training or analysis code.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(str(resources.files("ssltrace") / "schemas" / "config.schema.yaml"))


class ConfigError(ValueError):
    """A config mistake; the message names the key and what is expected."""


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into `base` key by key, except that a mapping naming another
    component (a different `name`: optimizer, schedule, dataset, ...; or a different augment
    `preset`) replaces the base's mapping whole, so that Adam never inherits SGD's `momentum`
    from the config below it, nor a run with `preset: none` the study's jitter overrides."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not _renamed(old, value):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _renamed(old: dict, new: dict) -> bool:
    return any(key in old and key in new and old[key] != new[key] for key in ("name", "preset"))


@cache
def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def defaults() -> dict[str, Any]:
    """Every default of the schema, as a config mapping (a fresh copy)."""
    return copy.deepcopy(_defaults(load_schema(), load_schema()))


def _defaults(schema: dict, root: dict) -> Any:
    """The defaults below `schema`: its own `default`, with its properties' defaults under it."""
    target = _resolve_ref(schema, root)
    found = {}
    for key, sub in target.get("properties", {}).items():
        value = _defaults(sub, root)
        if value is not _NONE:
            found[key] = value
    own = schema.get("default", target.get("default", _NONE))
    if own is _NONE:
        return found or _NONE
    return deep_merge(found, own) if isinstance(own, dict) else own


_NONE = object()


def runtime_keys(section: str) -> tuple[str, ...]:
    """Keys of a config section marked `x-runtime-only` in the schema: they choose where and
    how fast a stage computes, not what, so they are kept out of what triggers reruns."""
    root = load_schema()
    props = _resolve_ref(root["properties"][section], root).get("properties", {})
    return tuple(key for key, sub in props.items() if sub.get("x-runtime-only"))


def _resolve_ref(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def validate(config: dict) -> dict:
    """The config with every default filled in, or ConfigError naming the bad key.

    Checks the shape only (the schema); `ssltrace.checks.check` adds what needs the
    registries and `ssltrace.study.load` runs both.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(config).__name__}")
    coerce_strings(config, load_schema())
    check_finite(config)
    _check_schema(config)
    return deep_merge(defaults(), config)


def coerce_strings(value, schema: dict, root: dict | None = None):
    """Turn strings into the numbers/booleans the schema expects, in place.

    `snakemake --config key=value` parses nested values with YAML's BaseLoader, so
    `--config train={epochs: 300}` arrives as the string '300'.
    """
    root = root or schema
    schema = _resolve_ref(schema, root)
    shaped = {dict: "object", list: "array"}.get(type(value))
    for option in schema.get("oneOf", []):
        if shaped and option.get("type") == shaped:
            schema = option
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            value[key] = coerce_strings(item, sub, root)
        return value
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce_strings(item, items, root) for item in value]
    if not isinstance(value, str):
        return value
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    for option in schema.get("oneOf", []):
        kinds += [option["type"]] if isinstance(option.get("type"), str) else []
    return _parse_scalar(value, kinds)


def _parse_scalar(text: str, kinds: list[str]):
    if "integer" in kinds and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    if "boolean" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in kinds and text.lower() in ("null", "none", "~"):
        return None
    return text


def _check_schema(config: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        raise ConfigError(_schema_message(errors[0]))


def _schema_message(error) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        where = f"under '{key}'" if error.absolute_path else "at the top level"
        return f"config: unknown key {', '.join(map(repr, extra))} {where}{hint}"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    expected = _expected(error.schema)
    return f"config key '{key}': expected {expected}, got {error.instance!r}"


def _expected(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    if "oneOf" in schema:
        return " or ".join(_expected(s) for s in schema["oneOf"])
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        named = {
            "posint": "an integer >= 1",
            "probability": "a number in [0, 1]",
            "run_name": "a name of lower-case letters, digits and _ (starting with a letter)",
        }
        return named.get(name, name)
    kind = schema.get("type", "value")
    parts = [kind if isinstance(kind, str) else " or ".join(kind)]
    bounds = {
        "minimum": ">=",
        "exclusiveMinimum": ">",
        "maximum": "<=",
        "exclusiveMaximum": "<",
        "minLength": "of length >=",
        "minItems": "with at least this many items:",
    }
    limits = [f"{sym} {schema[k]}" for k, sym in bounds.items() if k in schema]
    if limits:
        parts.append(" and ".join(limits))
    if schema.get("uniqueItems"):
        parts.append("without duplicates")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']}")
    text = " ".join(parts)
    return ("an " if text[0] in "aeiou" else "a ") + text


def merge_files(paths: Sequence[str | Path], overrides: dict | None = None) -> dict:
    """The config files merged in order (later on top, by `deep_merge`), then `overrides`."""
    cfg: dict = {}
    for path in paths:
        cfg = deep_merge(cfg, read_file(path))
    return deep_merge(cfg, overrides or {})


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last
    silently, so a typo'd duplicate would quietly override the intended value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_file(path: str | Path) -> dict:
    """One config file as a mapping; YAML mistakes as ConfigError naming file and line."""
    try:
        with open(path) as fh:
            value = yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of keys at the top level, got a "
            f"{type(value).__name__}"
        )
    return value


def parse_scalar(text: str) -> Any:
    """A string as YAML reads a scalar ('0.2' -> 0.2, 'true' -> True, 'null' -> None)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def check_finite(value: Any, key: str = "") -> None:
    """Refuse inf and nan anywhere (YAML reads `.inf`; a schema's `> 0` lets it through)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"config key '{key or '(top level)'}': expected a finite number, got {value}"
        )
    if isinstance(value, dict):
        for sub, item in value.items():
            check_finite(item, f"{key}.{sub}" if key else str(sub))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{key}.{i}")


def message(exc: BaseException) -> str:
    """An exception's message without the quotes KeyError puts around it."""
    return str(exc.args[0] if exc.args else exc)
