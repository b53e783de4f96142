"""`ssltrace plan` at ImageNet scale (issue 19): GPU-hours from the reference throughput table
and disk from 224-px layer widths, on a small config whose numbers are computed by hand."""

import re

import pytest

from ssltrace import plan, study
from tests.conftest import ROOT


def imagenet_config(**extract):
    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    cfg["architecture"] = {"name": "resnet50_imagenet"}
    cfg["methods"] = ["supervised", "simclr"]
    cfg["seeds"] = [0, 1]
    cfg["train"]["epochs"] = 10
    cfg["extract"].update(
        {"layers": ["stem", "layer1", "layer4", "pool"], "epochs": {"every": 5}, **extract}
    )
    return cfg


def test_reference_rates_scale_by_each_methods_passes():
    cfg = imagenet_config()
    assert plan.reference_rate(cfg, "supervised") == 2600.0
    assert plan.reference_rate(cfg, "simclr") == 1300.0  # two views with gradients
    cfg["method_settings"]["moco_asym"] = {"method": "moco_v2", "params": {"symmetric": False}}
    cfg["method_settings"]["moco_v2"] = {}
    assert plan.reference_rate(cfg, "moco_asym") == pytest.approx(2600 * 3 / 4)  # (3 + 1) / 3
    assert plan.reference_rate(cfg, "moco_v2") == pytest.approx(2600 * 3 / 8)  # (6 + 2) / 3
    cfg["architecture"] = {"name": "resnet18", "width": 0.125}  # CIFAR stem: not tabled
    assert plan.reference_rate(cfg, "supervised") is None


def test_gpu_hours_from_the_table_by_hand():
    cfg = imagenet_config()
    n_train = study.training_images(cfg)
    text = plan.summary(cfg)
    # 10 epochs x n_train images, 2 seeds: supervised at 2,600 img/s, SimCLR at 1,300.
    hours = 2 * 10 * n_train * (1 / 2600 + 1 / 1300) / 3600
    assert f"GPU-hours for training (all runs): {hours:.1f}" in text
    assert "reference table" in text and "no throughput known" not in text
    # Extraction: every probe image at epochs 0, 5, 10, forward only at 3 x 2,600 img/s.
    images = sum(study.probe_sizes(cfg).values())
    extract = 2 * 2 * images * 3 / (3 * 2600) / 3600  # 2 methods x 2 seeds
    assert plan.extraction_hours(cfg, "simclr", images) == pytest.approx(extract / 4)
    found = re.search(r"GPU-hours for extraction \(all runs, reference table\): (\S+)", text)
    assert found and found[1] == f"{extract:.1f}"
    # A measured rate still wins over the table.
    assert "GPU-hours for training (all runs): 0.0" in plan.summary(cfg, images_per_s=1e9)


def test_activation_widths_at_224_px_by_hand():
    # ResNet-50 at 224 px: stem 64 x 56 x 56, layer1 256 x 56 x 56, layer4 2048 x 7 x 7, pool 2048.
    cfg = imagenet_config(pooling={"default": "mean", "rdm": "flatten"}, projection_dim=None)
    _, values = plan.network_sizes(cfg, "supervised")
    assert values["known"] == 64 + 256 + 2048 + 2048
    assert values["rdm"] == 64 * 56 * 56 + 256 * 56 * 56 + 2048 * 7 * 7 + 2048
    cfg = imagenet_config(pooling={"default": "mean", "rdm": "flatten"}, projection_dim=4096)
    _, values = plan.network_sizes(cfg, "supervised")
    assert values["rdm"] == 3 * 4096 + 2048 and values["known"] == 64 + 256 + 2048 + 2048
    # A PCA has at most as many components as the probe set has images (24 RDM images).
    cfg = imagenet_config(
        pooling={"default": "mean", "rdm": "flatten"}, projection_dim=4096, reduction="pca"
    )
    _, values = plan.network_sizes(cfg, "supervised")
    assert values["rdm"] == 4 * 24


def test_activation_disk_by_hand():
    cfg = imagenet_config(pooling="mean", projection_dim=None, dtype="float16")
    sizes = study.probe_sizes(cfg)
    per_image = 64 + 256 + 2048 + 2048
    neural = plan.network_sizes(cfg, "supervised")[1]["neural"]  # neural.pooling: its own
    per_checkpoint = sum(
        (neural if kind == "neural" else per_image) * n for kind, n in sizes.items()
    )
    # float16 (2 bytes) x epochs 0, 5, 10 x 2 seeds
    assert plan.activation_bytes(cfg, "supervised") == per_checkpoint * 2 * 3 * 2
    cfg["extract"]["dtype"] = "float32"
    assert plan.activation_bytes(cfg, "supervised") == per_checkpoint * 4 * 3 * 2
    total = 2 * plan.activation_bytes(cfg, "supervised")  # simclr: the same backbone layers
    assert f"activations if all kept {total / 1e9:.1f} GB" in plan.summary(cfg)


def test_kept_activations_follow_extract_keep():
    cfg = imagenet_config(pooling="mean", projection_dim=None, keep=[0, 10])
    assert plan.kept_fraction(cfg, "supervised") == pytest.approx(2 / 3)  # of epochs 0, 5, 10
    kept = 2 * plan.activation_bytes(cfg, "supervised") * 2 / 3
    assert f"kept after analysis (extract.keep): {kept / 1e9:.1f} GB" in plan.summary(cfg)


def test_imagenet_plan_counts_every_training_image_before_the_archives_are_placed(tmp_path):
    """`ssltrace plan` estimates an ImageNet study whose archives are not in data_dir yet
    (a dry run refuses it, naming them), over ImageNet's 1,281,167 training images (not
    1000 x the smallest class's 732)."""
    from ssltrace.config import ConfigError
    from ssltrace.data import imagenet

    over = {"data_dir": str(tmp_path), "split": {"mode": "all"}}
    presets = (ROOT / "config.yaml", ROOT / "presets" / "imagenet_seed001.yaml")
    with pytest.raises(ConfigError, match="ILSVRC2012_img_train.tar"):
        study.load(*presets, overrides=over)
    cfg = study.load(*presets, overrides=over, need_data=False)
    assert study.training_images(cfg) == imagenet.TRAIN_IMAGES == 1_281_167
    cfg["split"] = {**cfg["split"], "mode": "held_out", "n_known": 10}
    assert study.training_images(cfg) == round(1_281_167 * 10 / 1000)
