"""Config validation: every mistake is rejected before any job runs, naming the key.

Every invalid config goes through `snakemake -n` (the real CLI entry point, one process for
the whole corpus so torch and Snakemake are imported once) and must stop while the Snakefile
is read, before a DAG is built, with one line naming the key and what is expected.
"""

import copy
import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from ssltrace import config as sslconfig
from ssltrace import study
from tests.conftest import ROOT


def base():
    with open(ROOT / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    with open(ROOT / "presets/ci.yaml") as fh:
        return sslconfig.deep_merge(cfg, yaml.safe_load(fh))


def put(cfg, dotted, value):
    *parents, leaf = dotted.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return cfg


class _Delete:
    def __repr__(self):
        return "<deleted>"


DELETE = _Delete()
FILE = "<a regular file>"  # replaced by the path of a file the test creates


def materialise(value, file_path):
    """A copy of `value` with FILE replaced by `file_path` (also inside strings)."""
    if value is DELETE:
        return value
    if isinstance(value, str):
        return value.replace(FILE, str(file_path))
    if isinstance(value, list):
        return [materialise(v, file_path) for v in value]
    if isinstance(value, dict):
        return {k: materialise(v, file_path) for k, v in value.items()}
    return copy.deepcopy(value)


# (key to change, new value, text the one-line message must contain)
INVALID = [
    ("methods", ["simclr", "dino"], "methods[1]"),
    ("methods", [], "'methods'"),
    ("methods", ["simclr", "simclr"], "'methods'"),
    ("method_settings.dino", {}, "method_settings.dino"),
    ("method_settings.simclr", {"lr": 0.1}, "'lr'"),
    ("method_settings.simclr.train", {"epoch": 3}, "'epoch'"),
    ("architecture.name", "vgg16", "architecture"),
    ("architecture.width", 0, "architecture.width"),
    ("architecture.width", "wide", "architecture.width"),
    ("architecture.depth", 3, "depth"),
    ("dataset.name", "imagenet21k", "dataset.name"),
    ("human.name", "cifar10", "human.name"),
    ("dataset", DELETE, "dataset"),
    ("train.epochs", 0, "train.epochs"),
    ("train.epochs", -3, "train.epochs"),
    ("train.epochs", 2.5, "train.epochs"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.optimizer.name", "rmsprop", "train.optimizer.name"),
    ("train.optimizer.lr", -0.1, "train.optimizer.lr"),
    ("train.schedule.name", "linear", "train.schedule.name"),
    ("train.device", "tpu", "train.device"),
    ("train.amp", "yes", "train.amp"),
    ("train.learning_rate", 0.1, "'learning_rate'"),
    ("fewshot.shots", 0, "fewshot.shots"),
    ("fewshot.shots", 12, "fewshot.shots"),
    ("fewshot.trials", -1, "fewshot.trials"),
    ("fewshot.distance", "manhattan", "fewshot.distance"),
    ("probes.novel.images_per_class", 13, "probes.novel.images_per_class"),
    ("probes.human.images_per_class", 0, "probes.human.images_per_class"),
    ("probes.novel.source", "val", "probes.novel.source"),
    ("split.n_known", 17, "split.n_known"),
    ("split.n_novel", 1, "split.n_novel"),
    ("seeds", [0, 0], "'seeds'"),
    ("seeds", [], "'seeds'"),
    ("seeds", [-1], "seeds.0"),
    ("seeds", "0", "'seeds'"),
    ("extract.layers", ["layer9"], "extract.layers"),
    ("extract.pooling", "median", "extract.pooling"),
    ("extract.pooling", {"rdm": "median"}, "extract.pooling"),
    ("extract.pooling", {"nerual": "mean"}, "unknown probe set 'nerual'"),
    ("extract.pooling", {"neural": "mean"}, "set by neural.pooling"),
    ("extract.projection_dim", 0, "extract.projection_dim"),
    ("figures.deep_layer", "layer7", "figures.deep_layer"),
    ("figures.methods", ["byol"], "figures.methods"),
    ("geometry.probes", ["logistic"], "figures.linear_probe"),
    ("extract.epochs", [0, 99], "extract.epochs"),
    ("extract.epochs", {"every": 0}, "extract.epochs"),
    ("clustering.linkage", "centroid", "clustering.linkage"),
    ("figures.formats", ["gif"], "figures.formats"),
    ("results_dir", "", "results_dir"),
    ("colour", "blue", "'colour'"),
    # unknown keys, wrong types
    ("dataset.options.path", "/data/cifar", "'path'"),
    ("probes.novel.size", 5, "'size'"),
    ("seeds", [0, "one"], "seeds.1"),
    ("seeds", [0, True], "seeds.1"),
    ("methods", "simclr", "'methods'"),
    ("train.deterministic", "yes", "train.deterministic"),
    ("figures.dpi", 1.5, "figures.dpi"),
    ("clustering.permutations", "many", "clustering.permutations"),
    ("trajectory.compare", ["cosine"], "trajectory.compare"),
    ("extract.epochs", [], "extract.epochs"),
    # more images or shots than the data has, split sizes that do not add up
    ("probes.known.train_per_class", 17, "probes.known.train_per_class"),
    ("dataset.options.test_per_class", 3, "probes.novel.images_per_class"),
    ("human.options.per_class", 2, "probes.human.images_per_class"),
    ("split.n_novel", 17, "split.n_novel"),
    # names from the config never reach a shell: hostile ones fail the registry check
    ("methods", ["simclr; touch PWNED"], "methods.0"),
    ("methods", ["$(touch PWNED)"], "methods.0"),
    ("dataset.name", "synthetic`touch PWNED`", "dataset.name"),
    ("architecture.name", "resnet18 && touch PWNED", "architecture"),
    ("extract.layers", ["layer1'; touch PWNED; '"], "extract.layers"),
    # paths the workflow cannot create, settings the pretrain job would refuse
    ("data_dir", FILE, "data_dir"),
    ("results_dir", f"{FILE}/results", "results_dir"),
    ("results_dir", "results/{method}", "results_dir"),
    ("train.batch_size", 400, "train.batch_size"),
    ("augment.preset", "nope", "augment"),
    ("method_settings.simclr.params", {"temp": 0.5}, "temp"),
    ("train.schedule", {"name": "cosine_fixed"}, "horizon"),
    ("train.optimizer", {"name": "adam", "lr": 0.1, "momentum": 0.9}, "momentum"),
    ("method_settings.simclr.train", {"batch_size": 1}, "batch_size"),
    ("method_settings.simclr.train", {"optimizer": {"name": "sgd", "lr": -1}}, "lr"),
    # probe sets larger than their source, groups of classes the dataset lacks, absurd sizes
    ("probes.rdm.n_images", 2000, "probes.rdm.n_images"),
    ("probes.rdm.groups", {"people": ["people"]}, "probes.rdm.groups"),
    ("probes.rdm.groups", {"a": ["stripes"], "b": ["stripes"]}, "probes.rdm.groups"),
    ("probes.rdm", {"n_images": 2000, "groups": {"a": ["stripes"]}}, "probes.rdm.n_images"),
    ("probes.sample.n_images", 400, "probes.sample.n_images"),
    ("fewshot.max_per_class", 3, "fewshot.max_per_class"),
    ("architecture.width", 0.001, "architecture.width"),
    ("architecture.width", 64, "architecture.width"),
    ("results_dir", "-results", "results_dir"),
    ("method_settings.simclr.params", {"temperature": -0.5}, "temperature"),
    ("method_settings.simclr.params", {"proj_dim": 0}, "proj_dim"),
    # named variants: a registered base method, a name fit for folders and rules
    ("method_settings.fast", {"method": "simclrr"}, "method_settings.fast.method"),
    ("method_settings.Fast Run", {"method": "simclr"}, "method_settings"),
    ("methods", ["simclr", "mystery"], "methods[1]"),
    # sizes without bound, non-finite numbers, settings that fail only after training
    ("train.epochs", 10**9, "train.epochs"),
    ("seeds", [2**70], "seeds.0"),
    ("split.seed", 2**40, "split.seed"),
    ("train.optimizer.lr", float("inf"), "train.optimizer.lr"),
    ("method_settings.simclr.params", {"temperature": float("nan")}, "temperature"),
    ("figures.epochs", [50], "figures.epochs"),
    ("train.schedule.warmup_epochs", 5, "train.schedule"),
    ("extract.keep", [99], "extract.keep"),
    ("method_settings.simclr.augment", {"flip_p": 2.0}, "method_settings.simclr.augment"),
]

# Mistakes that pass validation today and fail later, inside the pretrain job (after the data,
# split and probe jobs ran). Each needs a check in ssltrace.config (see the reliability
# report); strict xfail, so that the fix shows up as XPASS: then move the case to INVALID.
PENDING: list = []
PENDING_MARK = pytest.mark.xfail(
    strict=True, reason="not checked by ssltrace.config yet (see the reliability report)"
)


def corpus(with_index=False):
    """INVALID and PENDING (xfail) as pytest params, optionally with their corpus index."""
    cases = [(case, ()) for case in INVALID] + [(case, PENDING_MARK) for case in PENDING]
    return [
        pytest.param(
            *((i, *case) if with_index else case), marks=marks, id=f"{case[0]}={case[1]!r}"
        )
        for i, (case, marks) in enumerate(cases)
    ]


@pytest.mark.parametrize(("key", "value", "needle"), corpus())
def test_invalid_config_is_rejected_naming_the_key(key, value, needle, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    cfg = put(base(), key, materialise(value, tmp_path / "file"))
    with pytest.raises(sslconfig.ConfigError) as err:
        study.checked(cfg)
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message


def test_valid_configs_pass_and_get_defaults():
    for preset in ("demo", "ci", "seed001_moco"):
        cfg = study.load(ROOT / "config.yaml", ROOT / f"presets/{preset}.yaml")
        assert cfg["fewshot"]["distance"] == "sqeuclidean"
    paper = study.load(ROOT / "config.yaml")
    assert len(paper["methods"]) == 12
    assert study.checkpoint_epochs(paper, "untrained") == [0]
    assert study.checkpoint_epochs(paper, "simclr") == list(range(201))


def test_run_settings_apply_per_method_overrides_only_to_that_method():
    cfg = sslconfig.validate(base())
    cfg["method_settings"]["simclr"] = {"train": {"optimizer": {"lr": 0.7}}}
    simclr = study.run_settings(cfg, "simclr", 0)
    supervised = study.run_settings(cfg, "supervised", 0)
    assert simclr["train"]["optimizer"]["lr"] == 0.7
    assert simclr["train"]["optimizer"]["momentum"] == cfg["train"]["optimizer"]["momentum"]
    assert supervised["train"]["optimizer"]["lr"] == cfg["train"]["optimizer"]["lr"]


def test_a_named_variant_trains_its_method_with_its_own_settings():
    cfg = base()
    cfg["methods"] = ["simclr", "simclr_t02"]
    cfg["method_settings"]["simclr_t02"] = {
        "method": "simclr",
        "params": {"temperature": 0.2},
        "train": {"epochs": 1},
    }
    cfg = study.checked(cfg)
    variant, plain = (study.run_settings(cfg, name, 0) for name in ("simclr_t02", "simclr"))
    assert variant["method"] == plain["method"] == "simclr"
    assert variant["method_params"] == {"temperature": 0.2}
    assert study.checkpoint_epochs(cfg, "simclr_t02") == [0, 1]
    assert study.checkpoint_epochs(cfg, "simclr") == [0, 1, 2]


def test_method_parameters_given_as_strings_take_the_type_of_their_default():
    # `snakemake --config` hands every nested value over as a string.
    cfg = base()
    cfg["method_settings"]["simclr"] = {"params": {"temperature": "0.2", "proj_dim": "64"}}
    params = study.run_settings(study.checked(cfg), "simclr", 0)["method_params"]
    assert params == {"temperature": 0.2, "proj_dim": 64}


def _check_config(*files):
    proc = subprocess.run(
        [sys.executable, "-m", "ssltrace.cli", "check-config", *map(str, files)],
        capture_output=True,
        text=True,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "text, needle",
    [
        ("seeds: [0]\nseeds: [1]\n", "line 2, column 1: key 'seeds' appears twice"),
        ("train: {epochs: 3, epochs: 4}\n", "key 'epochs' appears twice"),
        ("- simclr\n- byol\n", "expected a mapping of keys at the top level, got a list"),
        ("train: {epochs: 3\n", "line 2"),
    ],
)
def test_a_broken_config_file_is_one_line_naming_file_and_line(tmp_path, text, needle):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    code, stderr = _check_config(ROOT / "config.yaml", path)
    assert code == 1 and "Traceback" not in stderr, stderr
    assert f"config file {path}" in stderr and needle in stderr, stderr


def test_a_relative_results_dir_outside_the_project_is_warned_about():
    cfg = put(base(), "results_dir", "../../elsewhere")
    with pytest.warns(UserWarning, match="outside the working directory"):
        study.checked(cfg)


def test_a_run_may_override_the_augmentation():
    cfg = base()
    cfg["method_settings"]["simclr"] = {"augment": {"grayscale_p": 0.0}}
    cfg = study.checked(cfg)
    assert study.run_settings(cfg, "simclr", 0)["augment"] == {
        "preset": "seed000",
        "grayscale_p": 0.0,
    }
    assert study.run_settings(cfg, "supervised", 0)["augment"] == {"preset": "seed000"}


def test_a_run_with_another_augment_preset_replaces_the_study_augmentation_whole():
    """Seed 004 Fig. 3 right: supervised with and without augmentation (and AutoAugment's
    CIFAR-10 policy) as named variants of one study."""
    cfg = base()
    cfg["augment"] = {"preset": "seed004", "grayscale_p": 0.1}
    cfg["methods"] = ["supervised", "supervised_noaug", "supervised_autoaugment"]
    cfg["method_settings"]["supervised_noaug"] = {
        "method": "supervised",
        "augment": {"preset": "none"},
    }
    cfg["method_settings"]["supervised_autoaugment"] = {
        "method": "supervised",
        "augment": {"preset": "autoaugment_cifar10"},
    }
    cfg = study.checked(cfg)
    assert study.run_settings(cfg, "supervised", 0)["augment"] == {
        "preset": "seed004",
        "grayscale_p": 0.1,
    }
    assert study.run_settings(cfg, "supervised_noaug", 0)["augment"] == {"preset": "none"}
    auto = study.run_settings(cfg, "supervised_autoaugment", 0)["augment"]
    assert auto == {"preset": "autoaugment_cifar10"}


@pytest.mark.parametrize(
    "method, params, needle",
    [
        ("instance_recognition", {"nce_negatives": 100000}, "nce_negatives"),
        ("local_aggregation", {"background_k": 100000}, "background_k"),
        ("local_aggregation", {"kmeans_k": 1}, "kmeans_k"),
        ("deepcluster", {"k": 100000}, "'k'"),
        ("deepcluster", {"k": 1}, "'k'"),
        ("cmc", {"negatives": 100000}, "negatives"),
        ("cmc", {"temperature": 0.0}, "temperature"),
        ("instance_recognition", {"temperature": -1.0}, "temperature"),
    ],
)
def test_memory_bank_and_clustering_settings_beyond_the_data_fail_the_dry_run(
    method, params, needle
):
    cfg = base()  # the ci preset: 320 training images
    cfg["methods"] = [method]
    cfg["method_settings"][method] = {"params": params}
    with pytest.raises(sslconfig.ConfigError, match=f"method_settings.{method}.params") as err:
        study.checked(cfg)
    assert needle in str(err.value)


def test_cmc_refuses_a_grey_dataset(monkeypatch):
    from ssltrace.data import DATASETS

    cfg = base()
    cfg["methods"] = ["cmc"]
    grey = dataclasses.replace(DATASETS.get("synthetic"), colour=False)
    monkeypatch.setitem(DATASETS._items, "synthetic", grey)
    with pytest.raises(sslconfig.ConfigError, match="method_settings.cmc.params.*colour"):
        study.checked(cfg)


def test_analysed_epochs_every_n_keeps_the_last():
    cfg = sslconfig.validate(put(base(), "train.epochs", 10))
    cfg["extract"]["epochs"] = {"every": 4}
    assert study.analysed_epochs(cfg, "simclr") == [0, 4, 8, 10]
    assert study.analysed_epochs(cfg, "untrained") == [0]


def test_corpus_is_large_and_distinct():
    assert len(INVALID) >= 30
    assert len({f"{k}={v!r}" for k, v, _ in INVALID}) == len(INVALID)


# Runs snakemake's own command-line entry point once per config, in one process.
DRY_RUN_DRIVER = """
import contextlib, io, json, sys
from snakemake.cli import main
snakefile, workdir, *configs = sys.argv[1:]
for path in configs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(["-n", "--snakefile", snakefile, "--directory", workdir,
                  "--configfile", path, "--cores", "1"])
            code = 0
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"config": path, "returncode": code, "output": out.getvalue()}))
"""


def write_invalid(folder, i, key, value):
    """The base config with one mistake, results under folder/case{i}, as a YAML file."""
    (folder / "file").write_text("not a directory")
    cfg = put(base(), key, materialise(value, folder / "file"))
    if key != "results_dir":
        cfg["results_dir"] = str(folder / f"case{i}" / "results")
    path = folder / f"case{i}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake_dry_run(workdir, *configs):
    return subprocess.run(
        [sys.executable, "-c", DRY_RUN_DRIVER, str(ROOT / "Snakefile"), str(workdir), *configs],
        capture_output=True,
        text=True,
        cwd=workdir,
    )


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """{case index: (returncode, output)} of `snakemake -n` for every invalid config."""
    folder = tmp_path_factory.mktemp("invalid")
    cases = [*INVALID, *PENDING]
    paths = [str(write_invalid(folder, i, k, v)) for i, (k, v, _) in enumerate(cases)]
    proc = snakemake_dry_run(folder, *paths)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["config"] for r in results] == paths, proc.stderr[-3000:]
    return folder, {i: (r["returncode"], r["output"]) for i, r in enumerate(results)}


@pytest.mark.parametrize(("index", "key", "value", "needle"), corpus(with_index=True))
def test_snakemake_dry_run_rejects_before_planning(dry_runs, index, key, value, needle):
    folder, results = dry_runs
    code, out = results[index]
    assert code != 0, out[-2000:]
    messages = [line for line in out.splitlines() if "invalid configuration" in line]
    assert len(messages) == 1 and needle in messages[0], out[-2000:]
    assert "Building DAG" not in out
    assert not (folder / f"case{index}").exists()  # no job ran, no results directory


def test_dry_run_driver_matches_the_snakemake_command(tmp_path):
    """The in-process driver reports exactly what `snakemake -n` in a shell reports."""
    key, value, needle = INVALID[0]
    path = write_invalid(tmp_path, 0, key, value)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", str(path), "--cores", "1"]
    shell = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    driver = json.loads(snakemake_dry_run(tmp_path, str(path)).stdout.splitlines()[-1])
    assert shell.returncode == driver["returncode"] == 1

    def message(text):
        return [line for line in text.splitlines() if "invalid configuration" in line]

    assert message(shell.stdout + shell.stderr) == message(driver["output"])
    assert needle in message(driver["output"])[0]


def test_merge_replaces_a_mapping_that_names_another_component():
    base = {"train": {"epochs": 5, "optimizer": {"name": "sgd", "lr": 0.6, "momentum": 0.9}}}
    lr_only = sslconfig.deep_merge(base, {"train": {"optimizer": {"lr": 0.1}}})
    assert lr_only["train"]["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    adam = sslconfig.deep_merge(base, {"train": {"optimizer": {"name": "adam", "lr": 1e-3}}})
    assert adam["train"] == {"epochs": 5, "optimizer": {"name": "adam", "lr": 1e-3}}


def test_snakemake_merges_a_preset_that_switches_optimizer_like_check_config(tmp_path):
    """config.yaml's SGD has `momentum`; a preset choosing Adam must not inherit it (Snakemake's
    own merge would, and validation would then reject the preset)."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    preset = tmp_path / "adam.yaml"
    preset.write_text("train: {optimizer: {name: adam, lr: 1.0e-3}}\n")
    ci = str(ROOT / "presets/ci.yaml")
    assert study.load(tmp_path / "config.yaml", ci, preset)["train"]["optimizer"] == {
        "name": "adam",
        "lr": 1e-3,
    }
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", ci, str(preset), "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "invalid configuration" not in proc.stdout + proc.stderr
