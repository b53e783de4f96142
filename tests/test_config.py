"""Config validation: every mistake is rejected before any job runs, naming the key."""

import copy
import subprocess
import sys

import pytest
import yaml

from ssltrace import config as sslconfig
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


DELETE = object()

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
    ("dataset.name", "imagenet", "dataset.name"),
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
    ("extract.epochs", [0, 99], "extract.epochs"),
    ("extract.epochs", {"every": 0}, "extract.epochs"),
    ("clustering.linkage", "centroid", "clustering.linkage"),
    ("figures.formats", ["gif"], "figures.formats"),
    ("results_dir", "", "results_dir"),
    ("colour", "blue", "'colour'"),
]


@pytest.mark.parametrize(
    ("key", "value", "needle"), INVALID, ids=[f"{k}={v!r}" for k, v, _ in INVALID]
)
def test_invalid_config_is_rejected_naming_the_key(key, value, needle):
    cfg = put(base(), key, copy.deepcopy(value))
    with pytest.raises(sslconfig.ConfigError) as err:
        sslconfig.validate(cfg)
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message


def test_valid_configs_pass_and_get_defaults():
    for preset in ("demo", "ci"):
        cfg = sslconfig.load(ROOT / "config.yaml", ROOT / f"presets/{preset}.yaml")
        assert cfg["fewshot"]["distance"] == "sqeuclidean"
    paper = sslconfig.load(ROOT / "config.yaml")
    assert len(paper["methods"]) == 8
    assert sslconfig.checkpoint_epochs(paper, "untrained") == [0]
    assert sslconfig.checkpoint_epochs(paper, "simclr") == list(range(201))


def test_run_settings_apply_per_method_overrides_only_to_that_method():
    cfg = sslconfig.validate(base())
    cfg["method_settings"]["simclr"] = {"train": {"optimizer": {"lr": 0.7}}}
    simclr = sslconfig.run_settings(cfg, "simclr", 0)
    supervised = sslconfig.run_settings(cfg, "supervised", 0)
    assert simclr["train"]["optimizer"]["lr"] == 0.7
    assert simclr["train"]["optimizer"]["momentum"] == cfg["train"]["optimizer"]["momentum"]
    assert supervised["train"]["optimizer"]["lr"] == cfg["train"]["optimizer"]["lr"]


def test_analysed_epochs_every_n_keeps_the_last():
    cfg = sslconfig.validate(put(base(), "train.epochs", 10))
    cfg["extract"]["epochs"] = {"every": 4}
    assert sslconfig.analysed_epochs(cfg, "simclr") == [0, 4, 8, 10]
    assert sslconfig.analysed_epochs(cfg, "untrained") == [0]


SNAKEMAKE_SAMPLE = [INVALID[i] for i in (0, 6, 13, 24, 30, 33, 36, 43)]


@pytest.mark.parametrize(
    ("key", "value", "needle"), SNAKEMAKE_SAMPLE, ids=[k for k, _, _ in SNAKEMAKE_SAMPLE]
)
def test_snakemake_dry_run_rejects_before_planning(tmp_path, key, value, needle):
    cfg = put(base(), key, copy.deepcopy(value))
    cfg["results_dir"] = str(tmp_path / "results")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            str(tmp_path / "bad.yaml"),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "invalid configuration" in out and needle in out, out[-2000:]
    assert "Building DAG" not in out and not (tmp_path / "results").exists()
