import numpy as np
import pytest

from ssltrace.splits import human_probe, make_split, novel_probe


def fine_to_coarse():
    return np.repeat(np.arange(20), 5)


def test_split_is_seeded_disjoint_and_maps_fine_classes():
    names = [f"c{i}" for i in range(20)]
    a = make_split(fine_to_coarse(), names, 10, 10, seed=3)
    b = make_split(fine_to_coarse(), names, 10, 10, seed=3)
    c = make_split(fine_to_coarse(), names, 10, 10, seed=4)
    assert a == b and a != c
    assert set(a["known_coarse"]).isdisjoint(a["novel_coarse"])
    assert sorted(a["known_coarse"] + a["novel_coarse"]) == list(range(20))
    assert a["novel_fine"] == sorted(f for c in a["novel_coarse"] for f in range(5 * c, 5 * c + 5))
    assert a["novel_coarse_names"] == [names[i] for i in a["novel_coarse"]]


def test_split_sizes_must_fit_the_coarse_classes():
    with pytest.raises(ValueError, match="coarse classes"):
        make_split(fine_to_coarse(), [str(i) for i in range(20)], 12, 10, seed=0)


def tiny_dataset(per_class=6):
    fine = np.repeat(np.arange(100), per_class)
    rng = np.random.default_rng(0)
    return {
        "test_images": rng.integers(0, 255, (len(fine), 32, 32, 3), dtype=np.uint8),
        "test_fine": fine,
        "test_coarse": fine // 5,
        "fine_names": np.array([f"f{i}" for i in range(100)]),
    }


def test_novel_probe_only_holds_novel_classes_balanced():
    data = tiny_dataset()
    split = make_split(fine_to_coarse(), [str(i) for i in range(20)], 10, 10, seed=1)
    probe = novel_probe(data, split, per_class=4, source="test", seed=0)
    source_fine = data["test_fine"][probe["source_index"]]
    assert set(source_fine) <= set(split["novel_fine"])
    assert np.bincount(probe["labels"]).tolist() == [4] * 50
    # labels index novel_fine, coarse index novel_coarse, consistently with the source labels
    assert (np.array(split["novel_fine"])[probe["labels"]] == source_fine).all()
    assert (np.array(split["novel_coarse"])[probe["coarse"]] == source_fine // 5).all()
    assert (probe["images"] == data["test_images"][probe["source_index"]]).all()
    with pytest.raises(ValueError, match="fewer than 7"):
        novel_probe(data, split, per_class=7, source="test", seed=0)


def test_human_probe_keeps_counts_aligned_with_images():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 8)
    human = {
        "images": rng.integers(0, 255, (80, 32, 32, 3), dtype=np.uint8),
        "labels": labels,
        "class_names": np.array([f"k{i}" for i in range(10)]),
        "human_counts": rng.integers(0, 50, (80, 10)).astype(float),
    }
    probe = human_probe(human, per_class=5, seed=2)
    idx = probe["source_index"]
    assert (probe["human_counts"] == human["human_counts"][idx]).all()
    assert (probe["labels"] == labels[idx]).all()
    assert np.bincount(probe["labels"]).tolist() == [5] * 10
