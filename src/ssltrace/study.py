"""A study: its validated config, and what each stage asks of it (runs, epochs, layers, sizes).

`load(config_file, *presets)` merges, validates (`ssltrace.config`) and checks
(`ssltrace.checks`) a config; the functions below answer the workflow's, the CLI's and the
planner's questions from the validated mapping, asking the component that owns each fact
(a dataset's sizes, a method's `trains`, an architecture's layer names).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssltrace import config as sslconfig
from ssltrace import layout
from ssltrace.config import ConfigError


def load(
    path: str | Path,
    *presets: str | Path,
    overrides: dict | None = None,
    need_data: bool = True,
) -> dict:
    """Config file + presets (+ overrides) merged, validated and checked; defaults filled.
    need_data=False: the dataset's archives need not be in data_dir yet (checks.check)."""
    return checked(sslconfig.merge_files([path, *presets], overrides), need_data=need_data)


def checked(raw: dict, deep: bool = True, need_data: bool = True) -> dict:
    """`raw` validated against the schema and checked against the registries.

    `deep=False` skips the checks that build networks on the meta device (Snakemake's per-job
    processes: their main process ran them already).
    """
    from ssltrace.checks import check

    cfg = sslconfig.validate(raw)
    coerce_method_params(cfg)
    if deep:
        check(cfg, need_data)
    return cfg


def coerce_method_params(cfg: dict) -> None:
    """Method parameters given as strings (`--config` passes every value as one) become the
    type of the method's default, as the schema does for every other key."""
    from ssltrace.methods import METHODS

    for name, settings in cfg["method_settings"].items():
        method = settings.get("method", name)
        if method not in METHODS or not isinstance(settings.get("params"), dict):
            continue
        defaults = METHODS.get(method).defaults
        for key, value in settings["params"].items():
            if isinstance(value, str) and not isinstance(defaults.get(key, ""), str):
                settings["params"][key] = sslconfig.parse_scalar(value)


def dataset(cfg: Mapping[str, Any]):
    """The DataSource of `dataset.name` (its facts: classes, images per class)."""
    from ssltrace.data import DATASETS

    # A folder dataset's facts come from its folder listing (cached per process).
    return DATASETS.get(cfg["dataset"]["name"]).resolved(cfg["dataset"]["options"])


def human_set(cfg: Mapping[str, Any]):
    from ssltrace.data import HUMAN_SETS

    return HUMAN_SETS.get(cfg["human"]["name"])


def images_per_class(cfg: Mapping[str, Any], part: str) -> int:
    """Images per class of the dataset's `part` ('train' or 'test')."""
    return dataset(cfg).images_per_class(part, cfg["dataset"]["options"])


def human_per_class(cfg: Mapping[str, Any]) -> int:
    return human_set(cfg).images_per_class("all", cfg["human"]["options"])


def all_classes(cfg: Mapping[str, Any]) -> bool:
    """`split.mode: all` (seed 004): every class known, none held out as novel."""
    return cfg["split"].get("mode", "held_out") == "all"


def n_known_coarse(cfg: Mapping[str, Any]) -> int:
    """Known (pretraining) coarse classes: split.n_known, or all of them in all-classes mode."""
    return dataset(cfg).n_coarse if all_classes(cfg) else cfg["split"]["n_known"]


def known_per_class(cfg: Mapping[str, Any], part: str) -> int:
    """Images per class of the known probe set's `part` ('train' or 'test'): its setting, or
    the dataset's whole part when the setting is null (all-classes mode's full sets)."""
    chosen = cfg["probes"]["known"][f"{part}_per_class"]
    return images_per_class(cfg, part) if chosen is None else chosen


def training_images(cfg: Mapping[str, Any]) -> int:
    """Training images of the known classes (the pretraining set); for a dataset whose
    classes differ in size, the known share of all its training images."""
    source = dataset(cfg)
    fine_known = source.fine_per_coarse * n_known_coarse(cfg)
    if source.train_total:
        return round(source.train_total * fine_known / source.n_classes)
    return fine_known * images_per_class(cfg, "train")


def probe_kinds(cfg: Mapping[str, Any]) -> list[str]:
    """The probe sets a study draws and extracts: all of layout.PROBES, except `novel` in
    all-classes mode (there are no novel classes)."""
    from ssltrace import layout

    return [k for k in layout.PROBES if not (k == "novel" and all_classes(cfg))]


def skipped_analyses(cfg: Mapping[str, Any]) -> dict[str, str]:
    """{analysis: why it is not run}: analyses reading a probe set the study does not draw
    (the few-shot analyses of novel classes in all-classes mode), or another skipped one's
    output."""
    from ssltrace.analysis import registered
    from ssltrace.analysis.base import Activations, Artifact, ProbeFile

    kinds, skipped = set(probe_kinds(cfg)), {}
    analyses = registered()
    for _ in analyses.names():  # until no change: an Artifact may name a later analysis
        for name in analyses.names():
            for spec in analyses.get(name).inputs.values():
                probe = getattr(spec, "probe", getattr(spec, "kind", None))
                if isinstance(spec, (Activations, ProbeFile)) and probe not in kinds:
                    skipped[name] = (
                        f"needs the {probe!r} probe set, which split.mode: all does not draw "
                        "(no novel classes)"
                    )
                elif isinstance(spec, Artifact) and spec.analysis in skipped:
                    skipped[name] = f"needs the output of {spec.analysis!r}, which is skipped"
    return skipped


def active_analyses(cfg: Mapping[str, Any]) -> list[str]:
    from ssltrace.analysis import registered

    skipped = skipped_analyses(cfg)
    return [name for name in registered().names() if name not in skipped]


def active_figures(cfg: Mapping[str, Any]) -> list:
    """Rows of the figure table whose inputs the study computes."""
    from ssltrace.figures.table import figure_table

    skipped = skipped_analyses(cfg)
    return [
        row
        for row in figure_table()
        if not any(spec.analysis in skipped for spec in row.inputs.values())
    ]


def settings_of(cfg: Mapping[str, Any], name: str) -> dict:
    """`method_settings.<name>` ({} when the run has none); for a random-target run, the
    supervised run its `random_targets.network_settings` entry describes."""
    if name in target_runs(cfg):
        return target_entry(cfg, target_runs(cfg)[name])
    return cfg["method_settings"].get(name, {})


def method_of(cfg: Mapping[str, Any], name: str) -> str:
    """The registered method a run name trains: `method_settings.<name>.method`, else the name
    itself. Named variants (`vicreg_mu5: {method: vicreg, params: ...}`) make sweeps of one
    method runs of one study, each with its own folder, tables rows and legend entry."""
    return settings_of(cfg, name).get("method", name)


def method_trains(cfg: Mapping[str, Any], name: str) -> bool:
    from ssltrace.methods import METHODS

    return METHODS.get(method_of(cfg, name)).trains


def method_train(cfg: Mapping[str, Any], name: str) -> dict:
    """`train` with the run's overrides merged in (name-aware, see config.deep_merge)."""
    override = settings_of(cfg, name).get("train", {})
    return sslconfig.deep_merge(cfg["train"], override)


def run_settings(cfg: Mapping[str, Any], name: str, seed: int) -> dict:
    """The complete run the pretrain stage trains; a change to it retrains that run. `name` is
    the run's name in the study (a method or a named variant of one)."""
    train = method_train(cfg, name)
    if not method_trains(cfg, name):
        train["epochs"] = 0
    run = {
        "method": method_of(cfg, name),
        "seed": int(seed),
        "method_params": settings_of(cfg, name).get("params", {}),
        "architecture": dict(settings_of(cfg, name).get("architecture", cfg["architecture"])),
        "train": train,
        "augment": run_augment(cfg, name),
    }
    labels = label_setting(cfg, name)
    if labels is not None:  # only then: other runs' settings (and fingerprints) stay as they were
        run["labels"] = labels
    return run


def label_setting(cfg: Mapping[str, Any], name: str) -> dict | None:
    """`method_settings.<name>.labels` with its seed filled in (None: every label is used)."""
    labels = settings_of(cfg, name).get("labels")
    return None if labels is None else {"seed": 0, **labels}


def n_labels(cfg: Mapping[str, Any], name: str) -> int | None:
    """Labelled training images of run `name` (None: all of them, no subset), from the
    dataset's class sizes alone: the x axis of seed 003 Fig. 4e-f."""
    import numpy as np

    from ssltrace.training.labels import n_labelled

    setting = label_setting(cfg, name)
    if setting is None:
        return None
    n_classes = dataset(cfg).fine_per_coarse * n_known_coarse(cfg)
    return n_labelled(setting, np.full(n_classes, images_per_class(cfg, "train")))


def run_augment(cfg: Mapping[str, Any], name: str) -> dict:
    """`augment` with the run's overrides; an override naming another `preset` replaces it
    whole (a run `{preset: none}` trains without augmentation whatever the study sets)."""
    merged = sslconfig.deep_merge(
        {"augment": cfg["augment"]}, {"augment": settings_of(cfg, name).get("augment", {})}
    )
    return merged["augment"]


def checkpoint_epochs(cfg: Mapping[str, Any], name: str) -> list[int]:
    """Epochs with a checkpoint: 0 (initialisation) .. epochs; only 0 for `untrained`."""
    if not method_trains(cfg, name):
        return [0]
    return list(range(method_train(cfg, name)["epochs"] + 1))


def analysed_epochs(cfg: Mapping[str, Any], method: str) -> list[int]:
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


def available_layers(cfg: Mapping[str, Any]) -> list[str]:
    """Layer names of the configured network (backbone layers, then the head's)."""
    from ssltrace.network import layer_names

    try:
        return layer_names(cfg["architecture"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key 'architecture': {sslconfig.message(exc)}") from None


def analysed_layers(cfg: Mapping[str, Any]) -> list[str]:
    choice = cfg["extract"]["layers"]
    return available_layers(cfg) if choice == "all" else list(choice)


def probe_sizes(cfg: Mapping[str, Any]) -> dict[str, int]:
    """Images of each probe set."""
    p, per_coarse = cfg["probes"], dataset(cfg).fine_per_coarse
    known = known_per_class(cfg, "train") + known_per_class(cfg, "test")
    sizes = {
        "novel": per_coarse * cfg["split"]["n_novel"] * p["novel"]["images_per_class"],
        "human": human_set(cfg).n_classes * p["human"]["images_per_class"],
        "rdm": rdm_stimulus_count(cfg),
        "known": per_coarse * n_known_coarse(cfg) * known,
        "sample": p["sample"]["n_images"] * (p["sample"]["k_train"] + p["sample"]["k_test"]),
        "neural": neural_images(cfg),
        "objects": p["objects"]["n_images"],
        "gratings": p["gratings"]["orientations"]
        * len(p["gratings"]["frequencies"])
        * p["gratings"]["phases"],
    }
    return {kind: sizes[kind] for kind in probe_kinds(cfg)}


def probe_settings(cfg: Mapping[str, Any], kind: str) -> dict:
    """What the probe stage of `kind` needs (a change to it redraws that probe set)."""
    if kind == "neural":
        return {
            "image_size": cfg["neural"]["image_size"],
            "require_ceiling": cfg["predictivity"]["ceiling"],
        }
    settings = dict(cfg["probes"][kind])
    if kind == "rdm":
        settings["dataset"] = cfg["dataset"]["name"]
        if settings.get("images_dir"):
            from ssltrace.data.stimuli import folder_digest

            # The folder is no rule input (Snakemake cannot track a folder's contents):
            # its digest is a param, so a changed stimulus set redraws the probe set.
            settings["images_digest"] = folder_digest(settings["images_dir"])
    if kind == "sample":
        settings["augment"] = cfg["augment"]
    return settings


def extract_settings(cfg: Mapping[str, Any]) -> dict:
    keys = ("pooling", "batch_size", "device", "dtype", "keep", "projection_dim", "projection_seed")
    settings = {k: cfg["extract"][k] for k in keys}
    # Reduction settings join only when set away from their defaults: the rule's params (a
    # rerun trigger) stay as they were for every study that does not use them.
    for key, default in (("reduction", "projection"), ("reduction_fit_epoch", "last")):
        if cfg["extract"].get(key, default) != default:
            settings[key] = cfg["extract"][key]
    if cfg["extract"].get("distortion"):
        settings["distortion"] = True
    settings["layers"] = None if cfg["extract"]["layers"] == "all" else cfg["extract"]["layers"]
    pooling = settings["pooling"]
    pooling = {"default": pooling} if isinstance(pooling, str) else dict(pooling)
    # The neural probe set's pooling is `neural.pooling` (its spatial readout needs full maps).
    pooling["neural"] = cfg["neural"]["pooling"]
    settings["pooling"] = pooling
    settings["unprojected"] = ["neural"]
    return settings


def split_runtime(settings: Mapping[str, Any], section: str) -> tuple[dict, dict]:
    """(what a stage computes, where and how fast) of its settings; only the first is a rule
    param, so moving a study to another device or enabling compilation reruns nothing."""
    keys = sslconfig.runtime_keys(section)
    what = {k: v for k, v in settings.items() if k not in keys}
    return what, {k: v for k, v in settings.items() if k in keys}


SIMULATED = "simulated"  # the value of neural.datasets.<name> that asks for a generated set


def neural_files(cfg: Mapping[str, Any]) -> dict[str, str]:
    """name -> neural-data file of each dataset of `neural.datasets` (null ones left out); a
    simulated set is the file the workflow generates under results_dir (layout.NEURAL)."""
    out = {}
    for name, value in cfg["neural"]["datasets"].items():
        if value == SIMULATED:
            out[name] = layout.path(cfg["results_dir"], layout.NEURAL, neural=name)
        elif value is not None:
            out[name] = str(value)
    return out


def simulated_neural(cfg: Mapping[str, Any]) -> list[str]:
    """Names of the neural datasets the workflow generates."""
    return [n for n, v in cfg["neural"]["datasets"].items() if v == SIMULATED]


def behaviour_files(cfg: Mapping[str, Any]) -> dict[str, str]:
    return {n: str(v) for n, v in cfg["neural"]["behaviour"].items() if v is not None}


def neural_images(cfg: Mapping[str, Any]) -> int:
    """Images of the neural probe set (the simulated sets' from their settings, the files'
    from their `responses` shape, read lazily)."""
    from ssltrace.data.neural import behaviour_size, check_neural_file

    sim, total = cfg["neural"]["simulated"], 0
    for name, path in neural_files(cfg).items():
        if name in simulated_neural(cfg):
            total += sim["categories"] * sim["objects_per_category"] * sim["images_per_object"]
        else:
            total += check_neural_file(path).responses.shape[1]
    return total + sum(behaviour_size(p) for p in behaviour_files(cfg).values())


# Random-target networks (seed 004 §5): supervised runs of the study's DAG, named
# `target_<network>`, trained with `random_targets.seed` on the pretraining set.
TARGET_PREFIX = "target_"


def target_runs(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Run name -> network name of every random-target network (`random_targets.networks`)."""
    section = cfg.get("random_targets") or {}
    return {f"{TARGET_PREFIX}{net}": net for net in section.get("networks", [])}


def target_entry(cfg: Mapping[str, Any], network: str) -> dict:
    """A random-target network as a run entry: {method: supervised, architecture, train,
    augment?} from `random_targets.network_settings.<network>`."""
    found = cfg["random_targets"]["network_settings"].get(network)
    if found is None:
        raise ConfigError(
            f"config key 'random_targets.networks': {network!r} has no entry in "
            "random_targets.network_settings"
        )
    return {"method": "supervised", **found}


def target_epochs(cfg: Mapping[str, Any], run: str) -> list[int]:
    """Checkpoints of a target run used as target sets (`random_targets.epochs`)."""
    available = checkpoint_epochs(cfg, run)
    choice = cfg["random_targets"]["epochs"]
    if choice == "all":
        return available
    if isinstance(choice, dict):
        return sorted(set(available[:: choice["every"]]) | {available[0], available[-1]})
    return sorted(set(choice) & set(available) | {available[0], available[-1]})


def rdm_stimulus_count(cfg: Mapping[str, Any]) -> int:
    """Images of the RDM probe set: the user's folder, else the CIFAR stand-in's n_images."""
    rdm = cfg["probes"]["rdm"]
    if rdm.get("images_dir"):
        from ssltrace.data.stimuli import stimulus_files

        return len(stimulus_files(rdm["images_dir"]))
    return rdm["n_images"]


def rdm_stimuli(cfg: Mapping[str, Any]) -> str:
    """What the RDM probe set is, in words, for figure captions (`{rdm_stimuli}`)."""
    rdm = cfg["probes"]["rdm"]
    if rdm.get("images_dir"):
        return (
            f"the {rdm_stimulus_count(cfg)} images of the stimulus folder "
            f"{rdm['images_dir']} (probes.rdm.images_dir)"
        )
    return (
        f"a CIFAR stand-in: {rdm['n_images']} {cfg['dataset']['name']} test images balanced "
        "over category groups, in place of the 96-image set of Kriegeskorte et al. 2008 "
        "(not redistributable; set probes.rdm.images_dir to use it)"
    )


def figure_caption(row, cfg: Mapping[str, Any]) -> str:
    """A figure-table row's caption for this study: `{rdm_stimuli}` filled in, the band named
    as `figures.band` draws it, and the number of seeds stated."""
    caption = row.caption.replace("{rdm_stimuli}", rdm_stimuli(cfg))
    n = len(cfg["seeds"])
    if cfg["figures"].get("band", "sd") == "ci95":
        caption = caption.replace("± 1 SD", "95 % CI of the mean")
        band = "bands are 95 % confidence intervals of the mean (Student's t, n - 1 df)"
    else:
        band = "bands are ± 1 SD across seeds"
    seeds = f"{n} seeds per method" if n > 1 else "1 seed per method (no bands)"
    return f"{caption} Statistics: {seeds}; {band}."
