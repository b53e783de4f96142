"""Folder datasets (imagefolder, imagenet): the dataset file, bad input, decoding."""

from __future__ import annotations

import hashlib
import io as _io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssltrace import io
from ssltrace.data import (
    DATASETS,
    DataFormatError,
    DataUnavailableError,
    RemoteFile,
    prepare_dataset,
    validate_dataset,
)
from ssltrace.data.folder import FolderArray, decode_square, with_lazy_images
from ssltrace.data.imagenet import ARCHIVES, DEVKIT_ARCHIVE, TRAIN_ARCHIVE, VAL_ARCHIVE
from tests.folder_study import CLASSES, COARSE, make_image_folder, write_coarse_map
from tests.test_data_cifar import write_tar


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def _build(tmp_path, root, **options) -> dict:
    out = tmp_path / "ds.npz"
    prepare_dataset("imagefolder", tmp_path, out, root=str(root), **options)
    return io.load_npz(out)


def test_imagefolder_lists_files_labels_and_default_coarse(tmp_path, folder):
    data = _build(tmp_path, folder)
    assert str(data["kind"]) == "folder" and str(data["root"]) == str(folder.absolute())
    assert data["fine_names"].tolist() == sorted(CLASSES)
    np.testing.assert_array_equal(data["fine_to_coarse"], np.arange(4))  # each its own
    assert data["coarse_names"].tolist() == data["fine_names"].tolist()
    assert len(data["train_files"]) == 24 and len(data["test_files"]) == 12
    for split, sub in (("train", "train"), ("test", "val")):
        for f, label in zip(data[f"{split}_files"], data[f"{split}_fine"], strict=True):
            assert f.startswith(f"{sub}/{CLASSES[label]}/")  # labels follow the class folder
            assert (folder / f).stat().st_size == data[f"{split}_bytes"][
                list(data[f"{split}_files"]).index(f)
            ]
    assert int(data["image_size"]) == 224 and int(data["load_size"]) == 256
    validate_dataset(data)


def test_coarse_map_groups_classes(tmp_path, folder):
    data = _build(tmp_path, folder, coarse_map=str(write_coarse_map(tmp_path / "m.tsv")))
    names = data["coarse_names"].tolist()
    for fine, name in enumerate(data["fine_names"]):
        assert names[data["fine_to_coarse"][fine]] == COARSE[name]
    np.testing.assert_array_equal(data["train_coarse"], data["fine_to_coarse"][data["train_fine"]])


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({**COARSE, "zebra": "natural"}, "not class folders: zebra"),
        ({k: v for k, v in COARSE.items() if k != "dune"}, "does not map 1 class(es): dune"),
    ],
)
def test_coarse_map_with_unknown_or_missing_classes_is_named(tmp_path, folder, mapping, message):
    path = write_coarse_map(tmp_path / "m.tsv", mapping)
    with pytest.raises(DataFormatError, match="dataset.options.coarse_map") as err:
        _build(tmp_path, folder, coarse_map=str(path))
    assert message in str(err.value)


def test_decode_square_resizes_the_short_side_and_crops_the_centre(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # the centre 100x100 square is white, the sides black
    Image.fromarray(image).save(tmp_path / "a.png")
    out = decode_square(tmp_path / "a.png", 50)
    assert out.shape == (50, 50, 3) and out.dtype == torch.uint8
    assert int(out[:, 1:-1].min()) == 255  # only the centre square is left (edges blend)
    # the same as torchvision's Resize(short side) + CenterCrop on the decoded tensor
    from torchvision.transforms import v2

    bicubic = v2.InterpolationMode.BICUBIC
    expected = v2.Compose([v2.CenterCrop(100), v2.Resize(50, bicubic, antialias=True)])(
        torch.from_numpy(image).permute(2, 0, 1)
    )
    assert torch.equal(out.permute(2, 0, 1), expected)


def test_lazy_images_select_without_decoding_and_decode_on_asarray(tmp_path, folder):
    data = with_lazy_images(_build(tmp_path, folder, image_size=32, load_size=32))
    images = data["train_images"]
    assert isinstance(images, FolderArray) and images.shape == (24, 32, 32, 3)
    picked = images[np.array([3, 0])]
    assert isinstance(picked, FolderArray) and len(picked) == 2
    pixels = np.asarray(picked)
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8
    expected = decode_square(folder / data["train_files"][3], 32).numpy()
    np.testing.assert_array_equal(pixels[0], expected)


def test_corrupt_image_stops_naming_the_file(tmp_path):
    root = make_image_folder(tmp_path / "img", corrupt=True)
    with pytest.raises(DataFormatError, match="apple_000.jpg") as err:
        _build(tmp_path, root)
    assert "on_corrupt: skip" in str(err.value)


def test_corrupt_image_skipped_with_a_count_and_the_file_logged(tmp_path, caplog):
    root = make_image_folder(tmp_path / "img", corrupt=True)
    with caplog.at_level(logging.WARNING):
        data = _build(tmp_path, root, on_corrupt="skip")
    assert len(data["train_files"]) == 23 and "train/apple/apple_000.jpg" not in data["train_files"]
    text = caplog.text
    assert "skipping 1 corrupt image(s) of 24" in text and "apple_000.jpg" in text


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: [p.unlink() for p in (r / "train" / "bike").iterdir()], "bike has no images"),
        (lambda r: __import__("shutil").rmtree(r / "val" / "dune"), "lacks class folder(s) dune"),
        (lambda r: __import__("shutil").rmtree(r / "train"), "train_dir"),
    ],
)
def test_bad_folders_are_named(tmp_path, damage, message):
    root = make_image_folder(tmp_path / "img", train_per_class=2, test_per_class=1)
    damage(root)
    with pytest.raises(DataFormatError, match="dataset.options") as err:
        _build(tmp_path, root)
    assert message in str(err.value)


def test_load_size_smaller_than_image_size_is_refused(tmp_path, folder):
    with pytest.raises(ValueError, match="load_size .* must be >= dataset.options.image_size"):
        _build(tmp_path, folder, image_size=224, load_size=200)


def test_facts_come_from_the_folder(folder, tmp_path):
    facts = DATASETS.get("imagefolder").resolved(
        {"root": str(folder), "coarse_map": str(write_coarse_map(tmp_path / "m.tsv"))}
    )
    assert facts.n_classes == 4 and facts.n_coarse == 3
    assert facts.images_per_class("train") == 6 and facts.images_per_class("test") == 3


def test_validate_refuses_absolute_paths(tmp_path, folder):
    data = _build(tmp_path, folder)
    data["train_files"] = np.array(["/etc/passwd"] * len(data["train_files"]))
    with pytest.raises(DataFormatError, match="relative"):
        validate_dataset(data)


# ----------------------------------------------------------------------------- imagenet
def _jpeg(seed: int) -> bytes:
    buf = _io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def fake_imagenet(data_dir: Path, wnids=("n001", "n002", "n003")) -> dict[str, RemoteFile]:
    """Archives in ILSVRC 2012's layout (a devkit with meta.mat + ground truth, a training tar
    of per-class tars, a flat validation tar), and RemoteFiles with their md5s."""
    import scipy.io

    data_dir.mkdir(parents=True, exist_ok=True)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array(
        [(i + 1, w, f"thing {i}", 0) for i, w in enumerate(wnids)] + [(99, "n999", "all", 3)],
        dtype=dtype,
    )
    mat = _io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    truth = [3, 1, 2, 1, 2, 3]  # val image i has ILSVRC2012_ID truth[i]
    prefix = "ILSVRC2012_devkit_t12/data/"
    write_tar(
        data_dir / DEVKIT_ARCHIVE.filename,
        {
            prefix + "meta.mat": mat.getvalue(),
            prefix + "ILSVRC2012_validation_ground_truth.txt": "\n".join(map(str, truth)).encode(),
        },
        "w:gz",
    )
    inner = {}
    for k, wnid in enumerate(wnids):
        buf = _io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i in range(2):
                payload = _jpeg(10 * k + i)
                info = tarfile.TarInfo(f"{wnid}_{i}.JPEG")
                info.size = len(payload)
                tar.addfile(info, _io.BytesIO(payload))
        inner[f"{wnid}.tar"] = buf.getvalue()
    write_tar(data_dir / TRAIN_ARCHIVE.filename, inner, "w")
    write_tar(
        data_dir / VAL_ARCHIVE.filename,
        {f"ILSVRC2012_val_{i + 1:08d}.JPEG": _jpeg(100 + i) for i in range(len(truth))},
        "w",
    )
    return {
        a.filename: RemoteFile(
            a.filename, a.url, hashlib.md5((data_dir / a.filename).read_bytes()).hexdigest(), a.how
        )
        for a in ARCHIVES
    }


def test_imagenet_archives_extract_into_torchvision_layout(tmp_path):
    sources = fake_imagenet(tmp_path / "res")
    out = tmp_path / "imagenet.npz"
    prepare_dataset("imagenet", tmp_path / "res", out, sources=sources, image_size=32, load_size=32)
    data = io.load_npz(out)
    assert data["fine_names"].tolist() == ["n001", "n002", "n003"]
    assert data["train_files"].tolist()[:2] == ["train/n001/n001_0.JPEG", "train/n001/n001_1.JPEG"]
    # the ground truth [3, 1, 2, 1, 2, 3] sorts val images 2 and 4 into n001, ...
    val = dict(zip(data["test_files"].tolist(), data["test_fine"].tolist(), strict=True))
    assert val["val/n001/ILSVRC2012_val_00000002.JPEG"] == 0
    assert val["val/n003/ILSVRC2012_val_00000001.JPEG"] == 2
    assert sorted(data["test_fine"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert not (tmp_path / "res" / "imagenet" / "meta.bin").exists()  # never written or read


def test_imagenet_is_verified_never_downloaded(tmp_path):
    sources = fake_imagenet(tmp_path / "res")
    (tmp_path / "res" / VAL_ARCHIVE.filename).write_bytes(b"truncated")
    with pytest.raises(DataUnavailableError) as err:
        prepare_dataset("imagenet", tmp_path / "res", tmp_path / "o.npz", sources=sources)
    text = str(err.value)
    assert VAL_ARCHIVE.filename in text and "log in at https://image-net.org" in text
    assert "md5sum" in text and (tmp_path / "res" / VAL_ARCHIVE.filename).exists()


def test_imagenet_checksums_are_torchvisions():
    from torchvision.datasets.imagenet import ARCHIVE_META

    ours = {a.filename: a.md5 for a in ARCHIVES}
    assert ours == {name: md5 for name, md5 in ARCHIVE_META.values()}


# ----------------------------------------------------------------------------- probe sets
def test_probe_sets_decode_the_chosen_files_at_image_size(tmp_path, folder):
    from ssltrace.splits import write_probe, write_split

    out = tmp_path / "ds.npz"
    cmap = write_coarse_map(tmp_path / "m.tsv")
    prepare_dataset(
        "imagefolder",
        tmp_path,
        out,
        root=str(folder),
        image_size=32,
        load_size=48,
        coarse_map=str(cmap),
    )
    write_split(out, tmp_path / "split.json", 1, 2, 0)
    write_probe(
        "novel",
        out,
        tmp_path / "split.json",
        tmp_path / "novel.npz",
        images_per_class=2,
        source="test",
        seed=0,
    )
    probe = io.load_npz(tmp_path / "novel.npz")
    data = io.load_npz(out)
    assert probe["images"].dtype == np.uint8 and probe["images"].shape[1:] == (32, 32, 3)
    for image, index in zip(probe["images"], probe["source_index"], strict=True):
        np.testing.assert_array_equal(image, decode_square(folder / data["test_files"][index], 32))


def test_sample_probe_from_a_folder_equals_the_fully_decoded_one(tmp_path, folder):
    from ssltrace.splits import sample_probe

    out = tmp_path / "ds.npz"
    prepare_dataset("imagefolder", tmp_path, out, root=str(folder), image_size=32, load_size=32)
    lazy = with_lazy_images(io.load_npz(out))
    eager = {k: np.asarray(v) for k, v in lazy.items()}
    split = {"known_fine": [0, 2]}
    augment = {"preset": "seed000"}
    a = sample_probe(lazy, split, n_images=4, k_train=2, k_test=1, seed=3, augment=augment)
    b = sample_probe(eager, split, n_images=4, k_train=2, k_test=1, seed=3, augment=augment)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# ----------------------------------------------------------------------------- config checks
def _check(cfg: dict) -> None:
    from ssltrace import checks, config

    checks.check(config.validate(cfg))


def test_config_check_accepts_the_folder_study(tmp_path):
    from folder_study import DAG_CLASSES, DAG_COARSE, folder_config

    root = make_image_folder(tmp_path / "img", classes=DAG_CLASSES)
    _check(folder_config(root, write_coarse_map(tmp_path / "m.tsv", DAG_COARSE)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, m: {"root": str(r / "nowhere")}, "dataset.options.root: .* is not a folder"),
        (lambda r, m: {"test_dir": "train/apple"}, "dataset.options.test_dir: .* no class"),
        (lambda r, m: {"load_size": 200}, "load_size \\(200\\) must be >= .*image_size"),
        (lambda r, m: {"image_size": 200, "load_size": 256}, "'augment.size' = 224"),
        (
            lambda r, m: {"coarse_map": str(write_coarse_map(m, {"apple": "x"}))},
            "coarse_map: .* does not map 3 class",
        ),
        (lambda r, m: {"seed": 3}, "unknown option\\(s\\) seed"),
    ],
)
def test_config_check_names_bad_folder_options(tmp_path, change, message):
    from folder_study import folder_config

    from ssltrace.config import ConfigError

    root = make_image_folder(tmp_path / "img", train_per_class=6, test_per_class=3)
    cfg = folder_config(root, write_coarse_map(tmp_path / "m.tsv"))
    cfg["dataset"]["options"].update(change(root, tmp_path / "bad.tsv"))
    with pytest.raises(ConfigError, match=message):
        _check(cfg)


def test_config_check_finds_a_class_missing_from_the_test_folder(tmp_path):
    import shutil

    from folder_study import folder_config

    from ssltrace.config import ConfigError

    root = make_image_folder(tmp_path / "img", train_per_class=6, test_per_class=3)
    shutil.rmtree(root / "val" / "cloud")
    with pytest.raises(ConfigError, match="test_dir: .* lacks class folder\\(s\\) cloud"):
        _check(folder_config(root))


def test_config_check_names_missing_imagenet_archives(tmp_path):
    from folder_study import folder_config

    from ssltrace.config import ConfigError

    cfg = folder_config(tmp_path)
    cfg["dataset"] = {"name": "imagenet", "options": {}}
    cfg["data_dir"] = str(tmp_path / "resources")
    with pytest.raises(ConfigError, match="ILSVRC2012_img_train.tar, .*log in at"):
        _check(cfg)
    fake_imagenet(tmp_path / "resources")
    _check(cfg)  # present (their md5s are the data rule's to check)


def test_config_check_finds_a_known_coarse_class_with_one_fine_class(tmp_path, folder):
    from folder_study import folder_config

    from ssltrace.config import ConfigError

    # each class its own coarse class: one known coarse class is one fine class
    cfg = folder_config(folder)
    cfg["split"]["n_known"] = 1
    with pytest.raises(ConfigError, match="split.n_known' = 1: .* hold 1 fine class"):
        _check(cfg)


def test_label_sweep_counts_read_the_folders_images_per_class(folder):
    from ssltrace.figures.semisup import label_counts

    settings = {
        "dataset": {"name": "imagefolder", "options": {"root": str(folder)}},
        "n_known": 2,
        "method_settings": {"few": {"method": "few_label", "labels": {"fraction": 0.5}}},
    }
    # two known coarse classes of one fine class each, 6 training images per class, half labelled
    assert label_counts(settings) == {"few": ("few_label", 6)}
