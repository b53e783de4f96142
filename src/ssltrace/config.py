"""Study configuration: defaults, validation with messages that name the key, per-run settings.

The JSON schema (workflow/schemas/config.schema.yaml) checks shapes and types; this module adds
the checks a schema cannot express (names against the registries, shots vs images per class,
split sizes vs coarse classes) and resolves what each run and stage needs. The Snakefile calls
`validate` before any job is planned, so a mistake is reported before expensive work starts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

DEFAULTS: dict[str, Any] = {
    "results_dir": "results",
    "data_dir": "resources",
    "dataset": {"options": {}},
    "human": {"options": {}},
    "split": {"seed": 0, "n_known": 10, "n_novel": 10},
    "architecture": {"width": 1.0},
    "train": {
        "epochs": 10,
        "batch_size": 512,
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0},
        "device": "auto",
        "deterministic": False,
        "amp": "auto",
        "channels_last": True,
        "compile": False,
    },
    "augment": {"preset": "seed000"},
    "method_settings": {},
    "probes": {
        "novel": {"images_per_class": 100, "source": "test", "seed": 0},
        "human": {"images_per_class": 100, "seed": 0},
        "rdm": {"n_images": 96, "seed": 0, "groups": None},
        "known": {"train_per_class": 100, "test_per_class": 50, "seed": 0},
        "sample": {"n_images": 500, "k_train": 100, "k_test": 20, "seed": 0},
    },
    "trajectory": {"rdm_metric": "correlation", "compare": ["pearson", "spearman"]},
    "geometry": {"levels": ["fine", "coarse", "sample"], "probes": ["svm", "logistic"]},
    "extract": {
        "epochs": "all",
        "layers": "all",
        "pooling": "mean",
        "batch_size": 1000,
        "device": "auto",
        "dtype": "float32",
        "keep": "all",
    },
    "fewshot": {
        "shots": 5,
        "trials": 100,
        "distance": "sqeuclidean",
        "seed": 0,
        "max_per_class": None,
    },
    "human_alignment": {"permutations": 1000},
    "clustering": {"linkage": "average", "permutations": 1000, "seed": 0},
    "figures": {
        "formats": ["png", "pdf"],
        "dpi": 200,
        "methods": None,
        "matrix_layers": None,
        "early_layer": None,
        "deep_layer": None,
        "epochs": None,
        "linear_probe": "svm",
    },
}

# Images per class that each dataset offers, so impossible probe sizes fail before any job.
_REAL_PER_CLASS = {"cifar100": {"train": 500, "test": 100}, "cifar10h": 1000}


class ConfigError(ValueError):
    """A config mistake; the message names the key and what is expected."""


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into `base` key by key, except that a mapping naming another
    component (a different `name`: optimizer, schedule, dataset, ...) replaces the base's
    mapping whole, so that Adam never inherits SGD's `momentum` from the config below it."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not _renamed(old, value):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _renamed(old: dict, new: dict) -> bool:
    return "name" in old and "name" in new and old["name"] != new["name"]


@cache
def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def validate(config: dict, semantic: bool = True) -> dict:
    """Return the config with defaults filled in, or raise ConfigError naming the bad key.

    `semantic=False` skips the checks that build networks (for Snakemake's per-job processes,
    whose main process has already run them).
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(config).__name__}")
    coerce_strings(config, load_schema())
    _check_schema(config)
    full = deep_merge(DEFAULTS, config)
    if semantic:
        _check_semantics(full)
    return full


def coerce_strings(value, schema: dict, root: dict | None = None):
    """Turn strings into the numbers/booleans the schema expects, in place.

    `snakemake --config key=value` parses nested values with YAML's BaseLoader, so
    `--config train={epochs: 300}` arrives as the string '300'.
    """
    root = root or schema
    while "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
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
        return {"posint": "an integer >= 1", "probability": "a number in [0, 1]"}.get(name, name)
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
    return "a " + " ".join(parts)


def _check_semantics(cfg: dict) -> None:
    from ssltrace.data import DATASETS, HUMAN_SETS
    from ssltrace.methods import METHODS

    _check_name(cfg["dataset"]["name"], DATASETS, "dataset.name")
    _check_name(cfg["human"]["name"], HUMAN_SETS, "human.name")
    for i, method in enumerate(cfg["methods"]):
        _check_name(method, METHODS, f"methods[{i}]")
    for method in cfg["method_settings"]:
        _check_name(method, METHODS, f"method_settings.{method}")
    _check_paths(cfg)
    _check_split(cfg)
    _check_architecture_and_layers(cfg)
    _check_probe_sizes(cfg)
    _check_rdm_probe(cfg)
    _check_augment(cfg)
    _check_figures(cfg)
    for method in cfg["methods"]:
        _check_method(cfg, method)


def _check_figures(cfg: dict) -> None:
    fig, layers = cfg["figures"], None
    for key in ("matrix_layers", "early_layer", "deep_layer"):
        names = fig[key] if isinstance(fig[key], list) else [fig[key]]
        for name in (n for n in names if n is not None):
            layers = layers or analysed_layers(cfg)
            if name not in layers:
                raise ConfigError(
                    f"config key 'figures.{key}': {name!r} is not an extracted layer; "
                    f"expected one of {', '.join(layers)}"
                )
    for name in fig["methods"] or []:
        if name not in cfg["methods"]:
            raise ConfigError(
                f"config key 'figures.methods': {name!r} is not a method of this study "
                f"({', '.join(cfg['methods'])})"
            )
    if fig["linear_probe"] not in cfg["geometry"]["probes"]:
        raise ConfigError(
            f"config key 'figures.linear_probe' = {fig['linear_probe']!r}: not computed; "
            f"geometry.probes is {cfg['geometry']['probes']}"
        )


def _check_paths(cfg: dict) -> None:
    for key in ("results_dir", "data_dir"):
        path = Path(cfg[key])
        if any(c in cfg[key] for c in "{}"):
            raise ConfigError(
                f"config key '{key}' = {cfg[key]!r}: braces are not allowed (Snakemake would "
                "read them as wildcards)"
            )
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if cfg[key].startswith("-"):
            raise ConfigError(
                f"config key '{key}' = {cfg[key]!r}: must not start with '-' (commands would "
                "read it as an option); write ./ in front"
            )
        if existing is not None and not existing.is_dir():
            raise ConfigError(
                f"config key '{key}' = {cfg[key]!r}: {existing} exists and is not a directory"
            )


def _check_augment(cfg: dict) -> None:
    from ssltrace.augment import AugmentConfig

    try:
        AugmentConfig.from_dict(cfg["augment"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key 'augment': {_message(exc)}") from None


def _check_method(cfg: dict, method: str) -> None:
    """Per-method params and training overrides, checked as the run would check them."""
    from ssltrace.methods import METHODS
    from ssltrace.training.engine import resolve_run
    from ssltrace.training.schedule import build_schedule

    run = run_settings(cfg, method, cfg["seeds"][0])
    try:
        METHODS.get(method).resolve(run["method_params"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"config key 'method_settings.{method}.params': {_message(exc)}"
        ) from None
    train = run["train"]
    where = f"method_settings.{method}.train" if method in cfg["method_settings"] else "train"
    try:  # optimiser keys, batch size, amp, ...: what the pretrain job checks first
        resolve_run(run)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key '{where}': {_message(exc)}") from None
    try:
        build_schedule(train["schedule"], train["optimizer"]["lr"], max(train["epochs"], 1), 1)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key '{where}.schedule': {_message(exc)}") from None
    n_images = training_images(cfg)
    if method_trains(method) and train["batch_size"] > n_images:
        raise ConfigError(
            f"config key '{where}.batch_size' = {train['batch_size']}: larger than the "
            f"{n_images} training images of the known classes (no full batch per epoch)"
        )


def _message(exc: BaseException) -> str:
    return str(exc.args[0] if exc.args else exc)


def training_images(cfg: dict) -> int:
    """Training images of the known classes (5 fine classes per coarse class)."""
    per_class = _images_per_class(cfg["dataset"], "train")
    return 5 * cfg["split"]["n_known"] * per_class


def _check_name(name: str, registry, key: str) -> None:
    if name not in registry:
        raise ConfigError(
            f"config key '{key}': unknown {registry.kind} {name!r}; "
            f"expected one of {', '.join(registry.names())}"
        )


def _check_split(cfg: dict) -> None:
    split = cfg["split"]
    n_coarse = 20  # both CIFAR-100 and the synthetic set have 20 coarse classes
    total = split["n_known"] + split["n_novel"]
    if total > n_coarse:
        raise ConfigError(
            f"config keys 'split.n_known' + 'split.n_novel' = {total}: the dataset has only "
            f"{n_coarse} coarse classes to split"
        )
    n_clusters = split["n_novel"]
    if n_clusters < 2:
        raise ConfigError("config key 'split.n_novel': expected >= 2 novel coarse classes")


def _check_architecture_and_layers(cfg: dict) -> None:
    layers = available_layers(cfg)
    wanted = cfg["extract"]["layers"]
    if wanted != "all":
        unknown = [name for name in wanted if name not in layers]
        if unknown:
            raise ConfigError(
                f"config key 'extract.layers': unknown layer {unknown[0]!r} for architecture "
                f"{cfg['architecture']['name']!r}; expected some of {', '.join(layers)}"
            )
    epochs = cfg["extract"]["epochs"]
    if isinstance(epochs, list):
        too_late = [e for e in epochs if e > cfg["train"]["epochs"]]
        if too_late:
            raise ConfigError(
                f"config key 'extract.epochs': epoch {too_late[0]} is beyond "
                f"train.epochs = {cfg['train']['epochs']}"
            )


def available_layers(cfg: dict) -> list[str]:
    """Layer names of the configured architecture plus the head's first fc."""
    import torch

    from ssltrace.models import build_backbone

    arch = dict(cfg["architecture"])
    name = arch.pop("name")
    try:
        with torch.device("meta"):  # layer names only: allocate nothing, initialise nothing
            backbone = build_backbone(name, **arch)
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise ConfigError(f"config key 'architecture': {msg}") from None
    return [*backbone.layer_names, "head_fc1"]


def _check_probe_sizes(cfg: dict) -> None:
    novel = cfg["probes"]["novel"]
    per_class = _images_per_class(cfg["dataset"], novel["source"])
    if novel["images_per_class"] > per_class:
        raise ConfigError(
            f"config key 'probes.novel.images_per_class' = {novel['images_per_class']}: the "
            f"{cfg['dataset']['name']} {novel['source']} split has only {per_class} per class"
        )
    shots = cfg["fewshot"]["shots"]
    available = min(novel["images_per_class"], per_class)
    if shots >= available:
        raise ConfigError(
            f"config key 'fewshot.shots' = {shots}: needs fewer shots than the {available} "
            "images per novel class (probes.novel.images_per_class), leaving test samples"
        )
    human_per_class = _human_per_class(cfg["human"])
    if cfg["probes"]["human"]["images_per_class"] > human_per_class:
        raise ConfigError(
            f"config key 'probes.human.images_per_class' = "
            f"{cfg['probes']['human']['images_per_class']}: the {cfg['human']['name']} set has "
            f"only {human_per_class} images per class"
        )
    known = cfg["probes"]["known"]
    for part in ("train", "test"):
        have = _images_per_class(cfg["dataset"], part)
        if known[f"{part}_per_class"] > have:
            raise ConfigError(
                f"config key 'probes.known.{part}_per_class' = {known[f'{part}_per_class']}: "
                f"the {cfg['dataset']['name']} {part} split has only {have} per class"
            )
    if shots >= cfg["probes"]["human"]["images_per_class"]:
        raise ConfigError(
            f"config key 'fewshot.shots' = {shots}: needs fewer shots than "
            "probes.human.images_per_class"
        )
    cap = cfg["fewshot"].get("max_per_class")
    if cap is not None and cap <= shots:
        raise ConfigError(
            f"config key 'fewshot.max_per_class' = {cap}: must exceed fewshot.shots = {shots} "
            "so that every class keeps test samples"
        )
    sample, n_train = cfg["probes"]["sample"], training_images(cfg)
    if sample["n_images"] > n_train:
        raise ConfigError(
            f"config key 'probes.sample.n_images' = {sample['n_images']}: larger than the "
            f"{n_train} training images of the known classes it draws from"
        )


def _check_rdm_probe(cfg: dict) -> None:
    """Draw the RDM probe set on label counts alone: unknown classes or too few images fail."""
    import numpy as np

    from ssltrace.data import DATASETS
    from ssltrace.probesets import rdm_probe_indices
    from ssltrace.splits import default_groups

    rdm, name = cfg["probes"]["rdm"], cfg["dataset"]["name"]
    coarse_names = list(DATASETS.get(name).coarse_names)
    if not coarse_names:
        return
    per_coarse = 5 * _images_per_class(cfg["dataset"], "test")
    labels = np.repeat(np.arange(len(coarse_names)), per_coarse)
    groups = rdm.get("groups") or default_groups(name, coarse_names)
    try:
        rdm_probe_indices(labels, coarse_names, groups, rdm["n_images"], rdm.get("seed", 0))
    except ValueError as exc:
        # Size errors mention n_images; everything else is about the groups' class names.
        message = _message(exc)
        key = "n_images" if "n_images" in message else "groups"
        raise ConfigError(f"config key 'probes.rdm.{key}': {message}") from None


def _images_per_class(dataset: dict, source: str) -> int:
    if dataset["name"] in _REAL_PER_CLASS:
        return _REAL_PER_CLASS[dataset["name"]][source]
    options = dataset.get("options", {})
    defaults = {"train": 500, "test": 100}
    return options.get(f"{source}_per_class", defaults[source])


def _human_per_class(human: dict) -> int:
    if human["name"] in _REAL_PER_CLASS:
        return _REAL_PER_CLASS[human["name"]]
    return human.get("options", {}).get("per_class", 100)


def method_trains(method: str) -> bool:
    from ssltrace.methods import METHODS

    return getattr(METHODS.get(method), "trains", True)


def run_settings(cfg: dict, method: str, seed: int) -> dict:
    """Everything the pretrain stage needs for one run; a change to it retrains that run."""
    settings = cfg["method_settings"].get(method, {})
    train = deep_merge(cfg["train"], settings.get("train", {}))
    override = settings.get("train", {}).get("optimizer", {})
    if override.get("name", cfg["train"]["optimizer"]["name"]) != cfg["train"]["optimizer"]["name"]:
        # Another optimiser has other keys (adam has no momentum): replace, don't merge.
        train["optimizer"] = dict(override)
    key = f"method_settings.{method}.train"
    unknown = set(settings.get("train", {})) - set(DEFAULTS["train"])
    if unknown:
        raise ConfigError(f"config: unknown key {sorted(unknown)[0]!r} under '{key}'")
    if not method_trains(method):
        train["epochs"] = 0
    return {
        "method": method,
        "seed": int(seed),
        "method_params": settings.get("params", {}),
        "architecture": cfg["architecture"],
        "train": train,
        "augment": cfg["augment"],
    }


def checkpoint_epochs(cfg: dict, method: str) -> list[int]:
    """Epochs with a checkpoint: 0 (initialisation) .. epochs; only 0 for `untrained`."""
    if not method_trains(method):
        return [0]
    epochs = deep_merge(cfg["train"], cfg["method_settings"].get(method, {}).get("train", {}))
    return list(range(epochs["epochs"] + 1))


def analysed_epochs(cfg: dict, method: str) -> list[int]:
    """Checkpoints whose activations are extracted and analysed (extract.epochs)."""
    available = checkpoint_epochs(cfg, method)
    choice = cfg["extract"]["epochs"]
    if choice == "all":
        return available
    if isinstance(choice, dict):
        picked = set(available[:: choice["every"]]) | {available[-1]}
    else:
        picked = set(choice) & set(available) or {available[-1]}
    return sorted(picked)


def analysed_layers(cfg: dict) -> list[str]:
    choice = cfg["extract"]["layers"]
    return available_layers(cfg) if choice == "all" else list(choice)


def merge_files(paths: Sequence[str | Path], overrides: dict | None = None) -> dict:
    """The config files merged in order (later on top, by `deep_merge`), then `overrides`."""
    cfg: dict = {}
    for path in paths:
        with open(path) as fh:
            cfg = deep_merge(cfg, yaml.safe_load(fh) or {})
    return deep_merge(cfg, overrides or {})


def load(path: str | Path, *overrides: str | Path) -> dict:
    """Load a config file (plus preset files merged on top) and validate it."""
    return validate(merge_files([path, *overrides]))
