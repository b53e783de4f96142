"""A user's RDM stimulus folder (seed 001's 96 images): layout, pixels, digest, config."""

import numpy as np
import pytest
from PIL import Image

from ssltrace import io, study
from ssltrace.config import ConfigError
from ssltrace.data.stimuli import folder_digest, stimulus_files, stimulus_probe
from tests.test_config import base


def solid(path, colour, size=(40, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def garbage(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a png")


def kriegeskorte_like(root):
    """Two groups: one with category folders, one flat; a hidden file that must be ignored."""
    solid(root / "animate" / "faces" / "b.png", (200, 10, 10))
    solid(root / "animate" / "faces" / "a.png", (210, 20, 20))
    solid(root / "animate" / "bodies" / "x.jpg", (10, 200, 10))
    solid(root / "inanimate" / "02.png", (10, 10, 200), size=(64, 30))
    solid(root / "inanimate" / "01.PNG", (0, 0, 0, 0), mode="RGBA")  # transparent: white
    (root / "inanimate" / ".DS_Store").write_bytes(b"junk")
    (root / "inanimate" / "notes.txt").write_text("not an image")
    return root


def test_layout_order_labels_and_groups(tmp_path):
    root = kriegeskorte_like(tmp_path / "stimuli")
    probe = stimulus_probe(root, side=32)
    assert probe["source_files"].tolist() == [
        "animate/bodies/x.jpg",
        "animate/faces/a.png",
        "animate/faces/b.png",
        "inanimate/01.PNG",
        "inanimate/02.png",
    ]
    assert probe["coarse_names"].tolist() == ["animate", "inanimate"]
    assert probe["class_names"].tolist() == ["animate/bodies", "animate/faces", "inanimate"]
    assert probe["labels"].tolist() == [0, 1, 1, 2, 2]
    assert probe["coarse"].tolist() == [0, 0, 0, 1, 1]
    assert probe["images"].shape == (5, 32, 32, 3) and probe["images"].dtype == np.uint8


def test_pixels_rgb_alpha_on_white_centre_crop(tmp_path):
    root = kriegeskorte_like(tmp_path / "stimuli")
    images = stimulus_probe(root, side=32)["images"]
    assert (images[2] == [200, 10, 10]).all()  # solid colours survive resizing
    assert (images[3] == 255).all()  # fully transparent -> the white background
    # a wide image: centre square kept, the sides cut off
    wide = np.zeros((30, 90, 3), dtype=np.uint8)
    wide[:, :30] = (255, 0, 0)
    wide[:, 30:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    Image.fromarray(wide).save(root / "inanimate" / "03.png")
    fitted = stimulus_probe(root, side=16)["images"][-1]
    assert fitted.shape == (16, 16, 3)
    assert (fitted[:, 2:-2] == (0, 255, 0)).all()  # interior: the centre third only


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda r: garbage(r / "g" / "img.png"), "cannot read image"),
        (lambda r: (r / "g").mkdir(parents=True), "holds no images"),
        (lambda r: r.mkdir(), "no group folders"),
        (
            lambda r: (
                solid(r / "g" / "a.png", (1, 2, 3)),
                solid(r / "g" / "c" / "b.png", (1, 1, 1)),
            ),
            "mixes images and category folders",
        ),
        (lambda r: (r / "g" / "c").mkdir(parents=True), "category folder"),
        (lambda r: None, "is not a folder"),
    ],
)
def test_bad_folders_are_refused_naming_the_key(tmp_path, make, needle):
    root = tmp_path / "stimuli"
    make(root)
    with pytest.raises(ValueError, match=f"probes.rdm.images_dir: .*{needle}"):
        stimulus_probe(root, side=32)


def test_digest_follows_contents_and_names(tmp_path):
    root = kriegeskorte_like(tmp_path / "stimuli")
    first = folder_digest(root)
    assert folder_digest(root) == first
    (root / "inanimate" / "notes.txt").write_text("changed")  # not an image: no change
    assert folder_digest(root) == first
    solid(root / "animate" / "faces" / "a.png", (211, 20, 20))
    second = folder_digest(root)
    assert second != first
    (root / "animate" / "faces" / "a.png").rename(root / "animate" / "faces" / "c.png")
    assert folder_digest(root) != second
    assert len(stimulus_files(root)) == 5


def test_probe_stage_and_config_use_the_folder(tmp_path):
    from ssltrace.splits import write_probe

    root = kriegeskorte_like(tmp_path / "stimuli")
    cfg = base()
    default = study.checked(base())
    assert "CIFAR stand-in" in study.rdm_stimuli(default)
    cfg["probes"]["rdm"]["images_dir"] = str(root)
    cfg = study.checked(cfg)
    assert study.probe_sizes(cfg)["rdm"] == 5
    assert "5 images of the stimulus folder" in study.rdm_stimuli(cfg)
    settings = study.probe_settings(cfg, "rdm")
    assert settings["images_digest"] == folder_digest(root)
    dataset = tmp_path / "data.npz"
    io.save_npz(dataset, {"test_images": np.zeros((2, 32, 32, 3), dtype=np.uint8)})
    write_probe("rdm", dataset, None, tmp_path / "rdm.npz", **settings)
    written = io.load_npz(tmp_path / "rdm.npz")
    expected = stimulus_probe(root, side=32)
    for key in ("images", "labels", "coarse", "class_names", "coarse_names"):
        np.testing.assert_array_equal(written[key], expected[key])


def test_a_bad_folder_fails_the_config_check(tmp_path):
    cfg = base()
    cfg["probes"]["rdm"]["images_dir"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="'probes.rdm.images_dir': .*is not a folder"):
        study.checked(cfg)
    (tmp_path / "few" / "g").mkdir(parents=True)
    for i in range(3):
        solid(tmp_path / "few" / "g" / f"{i}.png", (i, i, i))
    cfg["probes"]["rdm"]["images_dir"] = str(tmp_path / "few")
    with pytest.raises(ConfigError, match="at least 4"):
        study.checked(cfg)
