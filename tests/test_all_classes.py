"""All-classes mode (seed 004 §3) and CIFAR-10 as a pretraining dataset (issue 18, item 11)."""

import numpy as np
import pytest

from ssltrace import study
from ssltrace.data.cifar import read_cifar10
from ssltrace.data.validate import validate_dataset
from ssltrace.plan import jobs_per_rule
from ssltrace.splits import known_probe, make_split
from tests.test_config import base
from tests.test_data_cifar import CIFAR10_NAMES, py2_pickle, write_tar
from tests.test_plan import parse_job_stats


def all_mode(**known):
    cfg = base()
    cfg["split"]["mode"] = "all"
    cfg["probes"]["known"].update(known)
    return study.checked(cfg)


def test_all_mode_split_knows_every_class_and_holds_none_out():
    fine_to_coarse = np.repeat(np.arange(20), 5)
    names = [f"c{i}" for i in range(20)]
    split = make_split(fine_to_coarse, names, 3, 4, seed=0, mode="all")
    assert split["known_coarse"] == list(range(20)) and split["novel_coarse"] == []
    assert split["known_fine"] == list(range(100)) and split["novel_fine"] == []
    assert split["mode"] == "all"
    held_out = make_split(fine_to_coarse, names, 3, 4, seed=0)
    assert len(held_out["known_coarse"]) == 3 and len(held_out["novel_coarse"]) == 4
    with pytest.raises(ValueError, match="split.mode"):
        make_split(fine_to_coarse, names, 3, 4, seed=0, mode="some")


def test_full_known_sets_take_every_image():
    rng = np.random.default_rng(0)
    data = {
        f"{s}_{k}": v
        for s, n in (("train", 60), ("test", 30))
        for k, v in (
            ("images", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
            ("fine", np.arange(n) % 6),
            ("coarse", np.arange(n) % 6 // 2),
        )
    }
    data["fine_names"] = np.array([f"f{i}" for i in range(6)])
    split = make_split(np.arange(6) // 2, ["a", "b", "c"], 1, 1, seed=0, mode="all")
    probe = known_probe(data, split, None, None, seed=0)
    assert (probe["part"] == 0).sum() == 60 and (probe["part"] == 1).sum() == 30
    assert sorted(probe["labels"][probe["part"] == 0].tolist()) == sorted(data["train_fine"])


def test_study_skips_the_novel_class_analyses_and_says_why():
    cfg = all_mode(train_per_class=None, test_per_class=None)
    assert "novel" not in study.probe_kinds(cfg)
    skipped = study.skipped_analyses(cfg)
    assert {"fewshot", "clustering"} <= set(skipped)
    assert "novel" in skipped["fewshot"] and "fewshot" in skipped["clustering"]
    active = study.active_analyses(cfg)
    assert {"geometry", "trajectory", "human"} <= set(active)
    assert not set(active) & set(skipped)
    for row in study.active_figures(cfg):
        assert not {spec.analysis for spec in row.inputs.values()} & set(skipped), row.stem
    # the CI preset's synthetic set: 20 coarse x 5 fine classes, 16 train / 12 test per class
    assert study.training_images(cfg) == 100 * 16
    assert study.probe_sizes(cfg)["known"] == 100 * (16 + 12)
    held_out = study.checked(base())
    assert study.skipped_analyses(held_out) == {}
    assert study.probe_kinds(held_out)[0] == "novel"


def test_all_mode_ignores_the_held_out_split_keys():
    cfg = base()
    cfg["split"].update({"mode": "all", "n_known": 15, "n_novel": 15})  # 30 > 20: unused
    study.checked(cfg)


def test_job_counts_of_an_all_classes_study_match_snakemake(tmp_path):
    cfg = all_mode()
    jobs = jobs_per_rule(cfg)
    assert "fewshot" not in jobs and "probe_novel" not in jobs
    stats = snakemake_job_stats_all(tmp_path)
    assert jobs == stats


def snakemake_job_stats_all(workdir):
    from tests.conftest import run_snakemake

    out = run_snakemake(workdir, "-n", config=("split={mode: all}",))
    # the skipped analyses are stated, with the reason
    assert "skipping analysis fewshot (and its figures)" in out.stdout + out.stderr
    return parse_job_stats(out.stdout)


def write_cifar10_full(path, n=20, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
    meta = {b"label_names": [name.encode() for name in CIFAR10_NAMES]}
    members = {f"cifar-10-batches-py/{k}": py2_pickle(v) for k, v in batches.items()}
    members["cifar-10-batches-py/batches.meta"] = py2_pickle(meta)
    return write_tar(path, members), batches


def test_cifar10_is_a_pretraining_dataset(tmp_path):
    path, batches = write_cifar10_full(tmp_path / "c10.tar.gz")
    data = read_cifar10(path)
    validate_dataset(data)
    train_labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    assert np.array_equal(data["train_fine"], train_labels)
    assert np.array_equal(data["test_fine"], batches["test_batch"][b"labels"])
    assert np.array_equal(data["train_coarse"], data["train_fine"])  # its own coarse class
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(data["train_images"][0], first)
    assert data["fine_names"].tolist() == CIFAR10_NAMES
    cfg = base()
    cfg["dataset"] = {"name": "cifar10"}
    cfg["split"]["mode"] = "all"
    cfg["probes"]["rdm"]["groups"] = {"animals": ["cat", "dog"], "vehicles": ["ship", "truck"]}
    cfg = study.checked(cfg)
    assert study.training_images(cfg) == 50000


def test_seed004_preset_is_a_valid_all_classes_study():
    from tests.conftest import ROOT

    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/seed004.yaml")
    assert study.all_classes(cfg) and "fewshot" in study.skipped_analyses(cfg)
    assert study.training_images(cfg) == 50000  # every CIFAR-100 training image
    assert study.probe_sizes(cfg)["known"] == 60000  # full train and test sets
    assert study.run_settings(cfg, "vicreg", 0)["augment"] == {"preset": "seed004"}
    assert study.run_settings(cfg, "supervised_noaug", 0)["augment"] == {"preset": "none"}
    assert study.run_settings(cfg, "vicreg", 0)["architecture"]["name"] == "res_5_250"
