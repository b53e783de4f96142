"""What a schema cannot check: names against the registries, sizes against the dataset, and
each component's own keys, asked of the component that owns them (once, before any job).

`check(cfg)` takes a config already validated by `ssltrace.config.validate` and raises
ConfigError naming the key; the Snakefile runs it at parse time, so `snakemake -n` reports a
mistake before any expensive work starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ssltrace import study
from ssltrace.config import ConfigError, message


def check(cfg: dict, need_data: bool = True) -> None:
    """Every check of `cfg` against the registries and the data's facts; need_data=False
    (`ssltrace plan`, an estimate made before the data is placed) skips whether a dataset's
    archives are in data_dir."""
    from ssltrace.data import DATASETS, HUMAN_SETS
    from ssltrace.methods import METHODS

    _check_name(cfg["dataset"]["name"], DATASETS, "dataset.name")
    _check_dataset_options(cfg, need_data)
    _check_name(cfg["human"]["name"], HUMAN_SETS, "human.name")
    for name, settings in cfg["method_settings"].items():
        if "method" in settings:
            _check_name(settings["method"], METHODS, f"method_settings.{name}.method")
        else:
            _check_name(name, METHODS, f"method_settings.{name}")
    for i, name in enumerate(cfg["methods"]):
        _check_name(study.method_of(cfg, name), METHODS, f"methods[{i}]")
    _check_paths(cfg)
    _check_split(cfg)
    _check_layers(cfg)
    _check_probe_sizes(cfg)
    _check_rdm_probe(cfg)
    _check_augment(cfg)
    _check_figures(cfg)
    _check_pooling(cfg)
    _check_weights(cfg)
    for method in cfg["methods"]:
        _check_method(cfg, method)
    _check_neural(cfg)
    _check_analysis_layers(cfg)
    _check_random_targets(cfg)
    _check_neighbours(cfg)
    _check_orientation(cfg)
    _check_objects(cfg)
    for method in cfg["methods"]:
        _check_labels(cfg, method)
        _check_depth(cfg, method)
    _check_chosen_epochs(cfg)
    _check_processes(cfg)
    _check_reduction_fit_epoch(cfg)
    _check_folder_split(cfg)


def _check_name(name: str, registry, key: str) -> None:
    if name not in registry:
        raise ConfigError(
            f"config key '{key}': unknown {registry.kind} {name!r}; "
            f"expected one of {', '.join(registry.names())}"
        )


def _check_paths(cfg: dict) -> None:
    for key in ("results_dir", "data_dir"):
        path = Path(cfg[key])
        if not path.is_absolute() and ".." in path.parts:
            # An absolute path is a deliberate choice; a relative one climbing out is often not.
            warnings.warn(
                f"config key '{key}' = {cfg[key]!r} lies outside the working directory "
                f"({Path.cwd()}); give an absolute path if that is intended",
                stacklevel=2,
            )
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


def _check_split(cfg: dict) -> None:
    n_coarse, split = study.dataset(cfg).n_coarse, cfg["split"]
    total = split["n_known"] + split["n_novel"]
    if study.all_classes(cfg):
        return  # every class is known: n_known and n_novel do not apply
    if total > n_coarse:
        raise ConfigError(
            f"config keys 'split.n_known' + 'split.n_novel' = {total}: the dataset has only "
            f"{n_coarse} coarse classes to split"
        )


def _check_layers(cfg: dict) -> None:
    layers = study.available_layers(cfg)
    wanted = cfg["extract"]["layers"]
    unknown = [name for name in wanted if name not in layers] if wanted != "all" else []
    if unknown:
        raise ConfigError(
            f"config key 'extract.layers': unknown layer {unknown[0]!r} for architecture "
            f"{cfg['architecture']['name']!r}; expected some of {', '.join(layers)}"
        )
    epochs = cfg["extract"]["epochs"]
    too_late = [e for e in epochs if e > cfg["train"]["epochs"]] if isinstance(epochs, list) else []
    if too_late:
        raise ConfigError(
            f"config key 'extract.epochs': epoch {too_late[0]} is beyond "
            f"train.epochs = {cfg['train']['epochs']}"
        )


def _check_probe_sizes(cfg: dict) -> None:
    novel, shots = cfg["probes"]["novel"], cfg["fewshot"]["shots"]
    if not study.all_classes(cfg):  # no novel probe set in all-classes mode
        _at_most(cfg, "probes.novel.images_per_class", novel["source"])
    if shots >= novel["images_per_class"] and not study.all_classes(cfg):
        raise ConfigError(
            f"config key 'fewshot.shots' = {shots}: needs fewer shots than the "
            f"{novel['images_per_class']} images per novel class (probes.novel.images_per_class), "
            "leaving test samples"
        )
    human = cfg["probes"]["human"]["images_per_class"]
    if human > study.human_per_class(cfg):
        raise ConfigError(
            f"config key 'probes.human.images_per_class' = {human}: the {cfg['human']['name']} "
            f"set has only {study.human_per_class(cfg)} images per class"
        )
    for part in ("train", "test"):
        _at_most(cfg, f"probes.known.{part}_per_class", part)
    if shots >= human:
        raise ConfigError(
            f"config key 'fewshot.shots' = {shots}: needs fewer shots than "
            "probes.human.images_per_class"
        )
    cap = cfg["fewshot"]["max_per_class"]
    if cap is not None and cap <= shots:
        raise ConfigError(
            f"config key 'fewshot.max_per_class' = {cap}: must exceed fewshot.shots = {shots} "
            "so that every class keeps test samples"
        )
    sample, n_train = cfg["probes"]["sample"], study.training_images(cfg)
    if sample["n_images"] > n_train:
        raise ConfigError(
            f"config key 'probes.sample.n_images' = {sample['n_images']}: larger than the "
            f"{n_train} training images of the known classes it draws from"
        )


def _at_most(cfg: dict, key: str, part: str) -> None:
    """The probe size at dotted `key` must not exceed the dataset's images per class of `part`."""
    section, kind, name = key.split(".")
    wanted, have = cfg[section][kind][name], study.images_per_class(cfg, part)
    if wanted is not None and wanted > have:  # None: every image
        raise ConfigError(
            f"config key '{key}' = {wanted}: the {cfg['dataset']['name']} {part} split has "
            f"only {have} per class"
        )


def _check_rdm_probe(cfg: dict) -> None:
    """Draw the RDM probe set on label counts alone: unknown classes or too few images fail."""
    import numpy as np

    from ssltrace.probesets import rdm_probe_indices
    from ssltrace.splits import default_groups

    rdm, source = cfg["probes"]["rdm"], study.dataset(cfg)
    if rdm.get("images_dir"):
        _check_stimulus_folder(rdm["images_dir"])
        return
    coarse_names = list(source.coarse_names)
    if not coarse_names:
        return
    per_coarse = source.fine_per_coarse * study.images_per_class(cfg, "test")
    labels = np.repeat(np.arange(len(coarse_names)), per_coarse)
    groups = rdm["groups"] or default_groups(cfg["dataset"]["name"], coarse_names)
    try:
        rdm_probe_indices(labels, coarse_names, groups, rdm["n_images"], rdm["seed"])
    except ValueError as exc:
        # Size errors mention n_images; everything else is about the groups' class names.
        text = message(exc)
        key = "n_images" if "n_images" in text else "groups"
        raise ConfigError(f"config key 'probes.rdm.{key}': {text}") from None


def _check_augment(cfg: dict) -> None:
    from ssltrace.augment import AugmentConfig

    _component("augment", AugmentConfig.from_dict, cfg["augment"])
    for name in cfg["methods"]:
        if "augment" in study.settings_of(cfg, name):
            augment = study.run_settings(cfg, name, 0)["augment"]
            _component(f"method_settings.{name}.augment", AugmentConfig.from_dict, augment)


def _check_figures(cfg: dict) -> None:
    fig, layers = cfg["figures"], None
    for key in ("matrix_layers", "early_layer", "deep_layer"):
        names = fig[key] if isinstance(fig[key], list) else [fig[key]]
        for name in (n for n in names if n is not None):
            layers = layers or study.analysed_layers(cfg)
            if name not in layers:
                raise ConfigError(
                    f"config key 'figures.{key}': {name!r} is not an extracted layer; "
                    f"expected one of {', '.join(layers)}"
                )
    _check_epochs(cfg, "figures.epochs", fig["epochs"] or [], every_run=True)
    keep = cfg["extract"]["keep"]
    _check_epochs(cfg, "extract.keep", [] if keep == "all" else keep, every_run=False)
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


def _check_epochs(cfg: dict, key: str, epochs: list[int], every_run: bool) -> None:
    """Epochs named by `key` must be analysed: by every trained run (figures draw them for
    each), or by at least one run (activations kept)."""
    trained = [m for m in cfg["methods"] if study.method_trains(cfg, m)] or cfg["methods"]
    analysed = [set(study.analysed_epochs(cfg, m)) for m in trained]
    have = set.intersection(*analysed) if every_run else set.union(*analysed)
    missing = [e for e in epochs if e not in have]
    if missing:
        raise ConfigError(
            f"config key '{key}': epoch {missing[0]} is not analysed"
            + (" by every trained run" if every_run else "")
            + f"; analysed epochs: {_ranges(sorted(have))}"
        )


def _ranges(epochs: list[int]) -> str:
    """0, 1, 2, 5 -> '0-2, 5' (a study may analyse hundreds of epochs)."""
    parts, start = [], None
    for i, e in enumerate(epochs):
        start = e if start is None else start
        if i + 1 == len(epochs) or epochs[i + 1] != e + 1:
            parts.append(str(e) if start == e else f"{start}-{e}")
            start = None
    return ", ".join(parts) or "none"


def _check_method(cfg: dict, method: str) -> None:
    """A method's params and training settings, each checked by the component that owns it."""
    from ssltrace.methods import METHODS
    from ssltrace.training.optim import check_optimizer_config
    from ssltrace.training.schedule import build_schedule

    run = study.run_settings(cfg, method, cfg["seeds"][0])
    cls, key = METHODS.get(run["method"]), f"method_settings.{method}.params"
    _component(key, cls.resolve, run["method_params"])
    facts = (study.training_images(cfg), study.dataset(cfg).colour)
    _component(key, cls.check_training_set, cls.resolve(run["method_params"]), *facts)
    train = run["train"]
    _component(_where(cfg, method, "optimizer"), check_optimizer_config, train["optimizer"])
    lr, epochs = train["optimizer"]["lr"], train["epochs"]
    _component(_where(cfg, method, "schedule"), build_schedule, train["schedule"], lr, epochs, 1)
    n_images = study.training_images(cfg)
    if study.method_trains(cfg, method) and train["batch_size"] > n_images:
        raise ConfigError(
            f"config key '{_where(cfg, method, 'batch_size')}' = {train['batch_size']}: "
            "larger than the "
            f"{n_images} training images of the known classes (no full batch per epoch)"
        )


def _where(cfg: dict, method: str, key: str) -> str:
    """The config key a run's `train.<key>` comes from: the method's override or `train`."""
    override = cfg["method_settings"].get(method, {}).get("train", {})
    return f"method_settings.{method}.train.{key}" if key in override else f"train.{key}"


def _component(key: str, check, *args) -> None:
    """Run a component's own check; its complaint becomes a ConfigError naming `key`."""
    try:
        check(*args)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key '{key}': {message(exc)}") from None


def _check_neural(cfg: dict) -> None:
    """Neural and behaviour datasets (seed 003): every file readable in the documented layout
    (the message names the file and the variable), and settings the data can satisfy."""
    from ssltrace.data.neural import NeuralDataError, check_neural_file, read_behaviour

    files, ceiling = study.neural_files(cfg), cfg["predictivity"]["ceiling"]
    if not files:
        raise ConfigError(
            "config key 'neural.datasets': no neural dataset left (the predictivity analysis "
            "scores against them); keep the generated one, simulated: simulated"
        )
    simulated = set(study.simulated_neural(cfg))
    for name, path in files.items():
        key = f"neural.datasets.{name}"
        try:
            if name not in simulated:
                _check_neural_dataset(cfg, key, check_neural_file(path, ceiling))
        except NeuralDataError as error:
            raise ConfigError(f"config key '{key}': {error}") from None
    for name, path in study.behaviour_files(cfg).items():
        if name == "human" or name in files:
            raise ConfigError(
                f"config key 'neural.behaviour.{name}': the name is taken (by the human probe "
                "set or a neural dataset); table rows are told apart by it"
            )
        if not Path(path).is_file():
            raise ConfigError(f"config key 'neural.behaviour.{name}': file {path} not found")
        try:
            read_behaviour(path)
        except NeuralDataError as error:
            raise ConfigError(f"config key 'neural.behaviour.{name}': {error}") from None
    if simulated:
        _check_simulated(cfg)
    _check_behaviour_layers(cfg)


def _check_neural_dataset(cfg: dict, key: str, data) -> None:
    folds = cfg["predictivity"]["outer_folds"]
    presentations = (
        data.responses.shape[1] if data.split is None else (data.split == "report").sum()
    )
    if presentations < 2 * folds:
        raise ConfigError(
            f"config key 'predictivity.outer_folds' = {folds}: {key} ({data.source}) has only "
            f"{presentations} presentations to score"
        )


def _check_simulated(cfg: dict) -> None:
    sim, pred = cfg["neural"]["simulated"], cfg["predictivity"]
    if pred["ceiling"] and sim["repetitions"] < 2:
        raise ConfigError(
            "config key 'neural.simulated.repetitions' = 1: the noise ceiling (predictivity."
            "ceiling: true) needs >= 2 repetitions; set predictivity.ceiling: false for raw r"
        )
    if sim["images_per_object"] < pred["outer_folds"]:
        raise ConfigError(
            f"config key 'neural.simulated.images_per_object' = {sim['images_per_object']}: "
            f"cross-validation folds are stratified by object, so each object needs at least "
            f"predictivity.outer_folds = {pred['outer_folds']} images"
        )
    low, high = sim["reliability"]
    if low > high:
        raise ConfigError(f"config key 'neural.simulated.reliability': {low} > {high}")


def _check_behaviour_layers(cfg: dict) -> None:
    wanted, extracted = cfg["behaviour"]["layers"] or [], study.analysed_layers(cfg)
    unknown = [layer for layer in wanted if layer not in extracted]
    if unknown:
        raise ConfigError(
            f"config key 'behaviour.layers': {unknown} are not extracted layers "
            f"({', '.join(extracted)})"
        )


def _check_analysis_layers(cfg: dict) -> None:
    """Layers named by seed 004's compression and UMAP settings must be extracted."""
    layers = study.analysed_layers(cfg)
    named = {
        "compression.layers": cfg["compression"]["layers"] or [],
        "umap.layer": [cfg["umap"]["layer"]] if cfg["umap"]["layer"] else [],
        "random_targets.layers": cfg["random_targets"]["layers"] or [],
    }
    for key, names in named.items():
        for name in names:
            if name not in layers:
                raise ConfigError(
                    f"config key '{key}': {name!r} is not an extracted layer; "
                    f"expected some of {', '.join(layers)}"
                )


def _check_random_targets(cfg: dict) -> None:
    """Each random-target network: an entry, a buildable architecture, trainable settings."""
    from ssltrace.network import layer_names

    for run, network in study.target_runs(cfg).items():
        entry = study.target_entry(cfg, network)
        key = f"random_targets.network_settings.{network}.architecture"
        _component(key, layer_names, entry["architecture"], "supervised")
        try:
            _check_method(cfg, run)
        except ConfigError as error:
            raise ConfigError(f"random-target network {network!r} (run {run}): {error}") from None


def _check_neighbours(cfg: dict) -> None:
    """The kNN bank is the known probe's train part; quality neighbours come from the rest."""
    settings = cfg["neighbours"]
    classes = study.dataset(cfg).fine_per_coarse * study.n_known_coarse(cfg)
    bank = classes * study.known_per_class(cfg, "train")
    images = bank + classes * study.known_per_class(cfg, "test")
    if settings["k"] > bank:
        raise ConfigError(
            f"config key 'neighbours.k' = {settings['k']}: larger than the {bank} images of "
            "the known probe's train part (probes.known.train_per_class x known classes)"
        )
    if settings["quality_neighbours"] >= images:
        raise ConfigError(
            f"config key 'neighbours.quality_neighbours' = {settings['quality_neighbours']}: "
            f"needs fewer than the {images} images of the known probe set"
        )


def _check_orientation(cfg: dict) -> None:
    """Orientation layers must be extracted ones."""
    wanted, analysed = cfg["orientation"]["layers"], study.analysed_layers(cfg)
    unknown = [name for name in wanted or [] if name not in analysed]
    if unknown:
        raise ConfigError(
            f"config key 'orientation.layers': layer {unknown[0]!r} is not extracted; "
            f"expected some of {', '.join(analysed)} (extract.layers)"
        )


def _check_objects(cfg: dict) -> None:
    """The object set's three parts need images each; a user file must exist."""
    objects = cfg["probes"]["objects"]
    if objects["file"] is not None:
        if not Path(objects["file"]).is_file():
            raise ConfigError(f"config key 'probes.objects.file': {objects['file']} does not exist")
        return
    from ssltrace.analysis.transfer import split_parts

    try:
        split_parts(objects["n_images"], objects["fractions"], objects["seed"])
    except ValueError as error:
        raise ConfigError(
            f"config key 'probes.objects.fractions' = {objects['fractions']}: {error}"
        ) from None


def _check_labels(cfg: dict, name: str) -> None:
    """The labelled subset (`method_settings.<name>.labels`): its values, the class sizes
    of the training set, and a method that can train on it."""
    from ssltrace.methods import METHODS
    from ssltrace.training.labels import check_setting

    key = f"method_settings.{name}.labels"
    setting = study.settings_of(cfg, name).get("labels")
    cls = METHODS.get(study.method_of(cfg, name))
    if setting is None:
        if getattr(cls, "requires_label_subset", False):
            raise ConfigError(
                f"config key '{key}': method {cls.name!r} trains on a labelled subset; "
                "set labels: {fraction: F} or {per_class: K}"
            )
        return
    if not cls.label_subset:
        raise ConfigError(
            f"config key '{key}': method {cls.name!r} does not train on a labelled subset "
            "(only the semi-supervised methods and the few-label control do)"
        )
    _component(key, check_setting, setting, study.images_per_class(cfg, "train"))


def _check_depth(cfg: dict, name: str) -> None:
    """A method that predicts depth needs a dataset with depth maps (train_depth)."""
    from ssltrace.methods import METHODS

    cls = METHODS.get(study.method_of(cfg, name))
    if cls.needs_depth and not study.dataset(cfg).depth:
        raise ConfigError(
            f"config key 'dataset.name' = {cfg['dataset']['name']!r}: run {name!r} (method "
            f"{cls.name!r}) predicts depth and this dataset has no depth maps; use a dataset "
            "with train_depth (e.g. synthetic) or drop the run from 'methods'"
        )


def _check_pooling(cfg: dict) -> None:
    """`extract.pooling` as a mapping names probe kinds (or `default`) only."""
    from ssltrace import layout

    pooling = cfg["extract"]["pooling"]
    if isinstance(pooling, dict):
        if "neural" in pooling:
            raise ConfigError(
                "config key 'extract.pooling': names the neural probe set, whose pooling is "
                "set by neural.pooling (its spatial readout needs the full maps)"
            )
        valid = {*layout.PROBES, "default"}
        unknown = sorted(set(pooling) - valid)
        if unknown:
            raise ConfigError(
                f"config key 'extract.pooling': unknown probe set {unknown[0]!r}; expected "
                f"some of {', '.join(sorted(valid))}"
            )


def _check_stimulus_folder(folder: str) -> None:
    """A user's RDM stimulus folder: its layout, and every image readable (cheap: ~100)."""
    from ssltrace.data.stimuli import KEY, stimulus_probe

    try:
        probe = stimulus_probe(folder, side=32)
    except ValueError as exc:
        text = message(exc).removeprefix(f"{KEY}: ")
        raise ConfigError(f"config key '{KEY}': {text}") from None
    if len(probe["images"]) < 4:
        raise ConfigError(
            f"config key 'probes.rdm.images_dir': {folder!r} holds {len(probe['images'])} "
            "images; an RDM needs at least 4"
        )


def _check_weights(cfg: dict) -> None:
    """A weights file that initialises the backbone must exist before any run trains."""
    weights = cfg["architecture"].get("weights")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(
            f"config key 'architecture.weights' = {weights!r}: no such file (a torchvision "
            "ResNet weights file, e.g. resnet18-f37072fd.pth)"
        )


def _check_chosen_epochs(cfg: dict) -> None:
    """Epochs named by the seed 003 snapshot analyses must be analysed in some run."""
    analysed = set().union(*(study.analysed_epochs(cfg, m) for m in cfg["methods"]))
    for section in ("filters", "mds", "stimuli"):
        wanted = cfg[section]["epochs"] or []
        missing = [e for e in wanted if e not in analysed]
        if missing:
            raise ConfigError(
                f"config key '{section}.epochs': epoch {missing[0]} is not analysed in any run "
                f"(extract.epochs); analysed: {', '.join(map(str, sorted(analysed)))}"
            )


GPUS_PER_NODE_ENV = "SSLTRACE_SLURM_GPUS_PER_NODE"


def _check_processes(cfg: dict) -> None:
    """train.processes (training/ddp.py): the global batch splits evenly over the processes,
    and torchrun --standalone starts them on one node, so no run may ask for more GPUs than a
    node has (SSLTRACE_SLURM_GPUS_PER_NODE, when set)."""
    import os

    limit = os.environ.get(GPUS_PER_NODE_ENV, "").strip()
    if limit and not limit.isdigit():
        raise ConfigError(f"{GPUS_PER_NODE_ENV} must be a whole number, got {limit!r}")
    for method in cfg["methods"]:
        train = study.method_train(cfg, method)
        n, key = train["processes"], _where(cfg, method, "processes")
        if train["batch_size"] % n:
            raise ConfigError(
                f"config key '{_where(cfg, method, 'batch_size')}' = {train['batch_size']}: "
                f"not divisible by {key} = {n} (each process trains an equal share)"
            )
        if n > 1 and train["sync_bn"] and train["device"] == "cpu":
            raise ConfigError(
                f"config key '{_where(cfg, method, 'sync_bn')}': torch's SyncBatchNorm runs on "
                f"GPUs only, and run {method!r} trains on the CPU (train.device: cpu)"
            )
        if limit and n > int(limit):
            raise ConfigError(
                f"config key '{key}' = {n}: run {method!r} asks for {n} GPUs, more than the "
                f"{limit} of one node ({GPUS_PER_NODE_ENV}); torchrun starts a run's "
                "processes on one node"
            )


def check_granted_gpus(cfg: dict, gpus: int | None) -> None:
    """No run that trains on GPUs may ask for more of them than `snakemake --resources gpu=G`
    (the local profile's count) grants: Snakemake lowers a job's resources to the global limit
    without a word, while torchrun would still start train.processes ranks, each on its own
    GPU. Runs on the CPU (gloo) are free to. `gpus` None: no limit was given."""
    if gpus is None:
        return
    for method in cfg["methods"]:
        train = study.method_train(cfg, method)
        n = train["processes"]
        if n > gpus and _on_gpus(train["device"]):
            raise ConfigError(
                f"config key '{_where(cfg, method, 'processes')}' = {n}: run {method!r} asks "
                f"for {n} GPUs, more than --resources gpu={gpus} grants (Snakemake would "
                "start it with fewer); lower the key, raise the limit or train on the CPU"
            )


def _on_gpus(device: str) -> bool:
    """Whether a run with train.device `device` trains on GPUs here (auto: if CUDA is seen)."""
    import torch

    return torch.cuda.is_available() if device == "auto" else str(device).startswith("cuda")


def _check_reduction_fit_epoch(cfg: dict) -> None:
    """A PCA fitted on a named epoch needs that checkpoint in every trained run."""
    extract = cfg["extract"]
    epoch = extract.get("reduction_fit_epoch", "last")
    if extract.get("reduction", "projection") != "pca" or epoch == "last":
        return
    for name in cfg["methods"]:
        saved = study.checkpoint_epochs(cfg, name)
        for e in [epoch] if isinstance(epoch, int) else epoch:
            if study.method_trains(cfg, name) and e not in saved:
                raise ConfigError(
                    f"config key 'extract.reduction_fit_epoch': run {name!r} has no "
                    f"checkpoint of epoch {e} (its epochs: {_ranges(saved)}); choose "
                    'epochs every run saves, or "last"'
                )


def _check_dataset_options(cfg: dict, need_data: bool = True) -> None:
    """A folder dataset's folders, class lists and coarse map are read now, before any job:
    a folder without images, a class missing from a split or the coarse map, or an
    inconsistent image_size / load_size each stop `snakemake -n` with the key named."""
    try:
        study.dataset(cfg)
    except ValueError as exc:  # DataFormatError is one; messages name dataset.options.<key>
        raise ConfigError(f"config key 'dataset.options': {exc}") from None
    if cfg["dataset"]["name"] in ("imagefolder", "imagenet"):
        _check_folder_input_size(cfg)
    if cfg["dataset"]["name"] == "imagenet" and need_data:
        _check_imagenet_archives(cfg)


def _check_imagenet_archives(cfg: dict) -> None:
    """ImageNet's archives must be in data_dir (their md5s, minutes of reading, are checked
    by the data rule); after extraction only the extracted folders are needed."""
    from ssltrace.data import imagenet

    data_dir = Path(cfg["data_dir"])
    if all(
        (data_dir / imagenet.FOLDER / f"{imagenet.DONE}_{s}").is_file() for s in ("train", "val")
    ):
        return
    missing = [a.filename for a in imagenet.ARCHIVES if not (data_dir / a.filename).is_file()]
    if missing:
        raise ConfigError(
            f"config key 'dataset.name' = 'imagenet': {', '.join(missing)} not in data_dir "
            f"{data_dir.absolute()}; {imagenet.ARCHIVES[0].how} (README: Image folders and "
            "ImageNet)"
        )


def _check_folder_input_size(cfg: dict) -> None:
    """Probe images of a folder dataset are decoded at image_size and reach the network
    unresized, training crops at augment.size: the two must agree."""
    from ssltrace.augment import AugmentConfig
    from ssltrace.data import DATASETS

    options = {
        **DATASETS.get(cfg["dataset"]["name"]).option_defaults(),
        **cfg["dataset"]["options"],
    }
    size = AugmentConfig.from_dict(cfg["augment"]).size
    if size != options["image_size"]:
        raise ConfigError(
            f"config key 'augment.size' = {size}: differs from dataset.options.image_size = "
            f"{options['image_size']}; probe images are decoded at image_size and given to the "
            "network unresized, so training crops must have the same side"
        )


def _check_folder_split(cfg: dict) -> None:
    """An image folder's coarse classes may hold one fine class each: its seeded split is
    computed now, so known or novel classes too few for the probes are found before training
    (the geometry probes need two known fine classes, few-shot two novel ones)."""
    if cfg["dataset"]["name"] != "imagefolder":
        return
    from ssltrace.data import folder
    from ssltrace.splits import make_split

    listing = folder.cached_listing(folder.settings(cfg["dataset"]["options"]))
    s = cfg["split"]
    mode = s.get("mode", "held_out")
    split = make_split(
        listing.fine_to_coarse, listing.coarse_names, s["n_known"], s["n_novel"], s["seed"], mode
    )
    parts = (("known", "n_known"),) + ((("novel", "n_novel"),) if mode == "held_out" else ())
    for part, key in parts:
        if len(split[f"{part}_fine"]) < 2:
            raise ConfigError(
                f"config key 'split.{key}' = {s[key]}: the {part} coarse classes "
                f"{split[f'{part}_coarse_names']} (split.seed {s['seed']}) hold "
                f"{len(split[f'{part}_fine'])} fine class; the probes need at least two (add "
                "classes, change split.seed or dataset.options.coarse_map)"
            )
