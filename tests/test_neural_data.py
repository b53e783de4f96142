"""The neural-data file (ssltrace.data.neural): format round trip, the validator's errors
(each naming the file and the variable), the brainio importer on files in brainio's exact
layout, and the simulated dataset."""

from __future__ import annotations

import io as _io
import zipfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from ssltrace.data.neural import (
    NeuralData,
    NeuralDataError,
    _to_dataset,
    import_brainio,
    read_behaviour,
    read_neural,
    resize_images,
    simulate_neural,
    write_neural,
)


def tiny(reps: int = 3, presentations: int = 6, neuroids: int = 4, seed: int = 0) -> NeuralData:
    rng = np.random.default_rng(seed)
    return NeuralData(
        images=rng.integers(0, 256, (presentations, 8, 8, 3), dtype=np.uint8),
        responses=rng.standard_normal((reps, presentations, neuroids)).astype(np.float32),
        region=np.array(["V4", "V4", "IT", "IT"][:neuroids]),
        neuroid_id=np.array([f"u{i}" for i in range(neuroids)]),
        groups=np.array(["a", "b"] * (presentations // 2)),
        grouping="object_name",
        presentation={"category": np.array(["x"] * presentations)},
        source="test",
    )


def write_dataset(ds: xr.Dataset, path):
    ds.to_netcdf(path, engine="netcdf4")
    return path


# ----------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_field(tmp_path):
    data = tiny()
    write_neural(tmp_path / "n.nc", data)
    back = read_neural(tmp_path / "n.nc")
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.responses, data.responses)
    np.testing.assert_array_equal(back.region, data.region)
    np.testing.assert_array_equal(back.groups, data.groups)
    assert back.grouping == "object_name" and back.simulated is None and back.split is None
    assert back.regions == ["V4", "IT"] and back.has_ceiling
    np.testing.assert_array_equal(back.presentation["category"], ["x"] * 6)


def test_simulated_dataset_is_labelled_seeded_and_reliable(tmp_path):
    a = simulate_neural(seed=3, categories=2, objects_per_category=2, images_per_object=4)
    b = simulate_neural(seed=3, categories=2, objects_per_category=2, images_per_object=4)
    np.testing.assert_array_equal(a.responses, b.responses)
    assert a.responses.shape == (8, 16, 128) and a.images.shape == (16, 32, 32, 3)
    assert a.regions == ["V1-like", "IT-like"]
    assert a.simulated.startswith("SIMULATED") and "simulated" in a.source
    write_neural(tmp_path / "sim.nc", a)
    back = read_neural(tmp_path / "sim.nc")
    assert back.simulated == a.simulated
    with xr.open_dataset(tmp_path / "sim.nc") as ds:
        assert ds.attrs["simulated"].startswith("SIMULATED")
    np.testing.assert_allclose(back.true_reliability, a.true_reliability)
    assert ((0.5 <= a.true_reliability) & (a.true_reliability <= 0.9)).all()


def test_simulated_missing_repetitions_keep_one_per_presentation():
    data = simulate_neural(
        seed=1, categories=2, objects_per_category=2, images_per_object=5, missing=0.5
    )
    assert 0.3 < np.isnan(data.responses).mean() < 0.6
    assert (~np.isnan(data.responses)).any(axis=0).all()


# ----------------------------------------------------------------------------- validation
def expect_error(path, *words, **options):
    with pytest.raises(NeuralDataError) as info:
        read_neural(path, **options)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def test_wrong_rank_of_responses(tmp_path):
    ds = _to_dataset(tiny())
    ds["responses"] = ds["responses"].mean("repetition")
    path = write_dataset(ds, tmp_path / "rank.nc")
    expect_error(path, "'responses'", "rank 2")


def test_one_repetition_flags_no_ceiling_or_refuses_when_asked(tmp_path):
    path = tmp_path / "one.nc"
    write_neural(path, tiny(reps=1))
    assert not read_neural(path).has_ceiling
    expect_error(path, "'responses'", "1 repetition", "raw r", require_ceiling=True)


def test_images_not_matching_presentations(tmp_path):
    ds = _to_dataset(tiny())
    images = np.zeros((7, 8, 8, 3), np.uint8)
    ds = ds.drop_vars("images").assign(images=(("image", "height", "width", "channel"), images))
    path = write_dataset(ds, tmp_path / "images.nc")
    expect_error(path, "'images'", "7 images", "6 presentations")


def test_region_without_neuroids(tmp_path):
    path = tmp_path / "regions.nc"
    write_neural(path, tiny())
    expect_error(path, "'region'", "V1", regions=["V1", "IT"])
    ds = _to_dataset(tiny())
    ds.attrs["regions"] = "V4,IT,V2"
    expect_error(write_dataset(ds, tmp_path / "declared.nc"), "'region'", "V2")


def test_nan_only_neuroid(tmp_path):
    data = tiny()
    data.responses[:, :, 2] = np.nan
    path = tmp_path / "nan.nc"
    write_neural(path, data)
    expect_error(path, "'responses'", "u2", "NaN")


def test_presentation_without_any_repetition(tmp_path):
    data = tiny()
    data.responses[:, 1, 0] = np.nan
    path = tmp_path / "hole.nc"
    write_neural(path, data)
    expect_error(path, "'responses'", "no repetition")


def test_missing_grouping_bad_split_and_unreadable_file(tmp_path):
    ds = _to_dataset(tiny()).drop_vars(["object_name", "category"])
    ds.attrs.pop("grouping")
    expect_error(write_dataset(ds, tmp_path / "nogroup.nc"), "object_name or category")
    ds = _to_dataset(tiny()).assign_coords(split=("presentation", ["fit"] * 6))
    expect_error(write_dataset(ds, tmp_path / "split.nc"), "'split'", "report")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    expect_error(tmp_path / "junk.nc", "NetCDF")


def test_images_from_a_folder(tmp_path):
    data = tiny()
    ds = _to_dataset(data).drop_vars("images")
    (tmp_path / "img").mkdir()
    names = [f"s{i}.png" for i in range(6)]
    for name, img in zip(names, data.images, strict=True):
        Image.fromarray(img).save(tmp_path / "img" / name)
    ds = ds.assign_coords(filename=("presentation", names))
    ds.attrs["image_dir"] = "img"
    np.testing.assert_array_equal(
        read_neural(write_dataset(ds, tmp_path / "f.nc")).images, data.images
    )
    (tmp_path / "img" / names[2]).unlink()
    expect_error(tmp_path / "f.nc", "'filename'", "s2.png")


def test_resize_images_crops_to_square_and_keeps_flat_images_flat():
    images = np.full((2, 40, 60, 3), 77, np.uint8)
    out = resize_images(images, 32)
    assert out.shape == (2, 32, 32, 3) and (out == 77).all()


# ----------------------------------------------------------------------------- brainio import
BINS = [(50, 70), (70, 120), (120, 170), (170, 220)]


def brainio_files(tmp_path, legacy: bool = False):
    """An assembly, stimulus CSV and zip in brainio's layout (brainio.packaging.write_netcdf,
    create_stimulus_zip; docs/SPECIFICATION.md); `legacy`: the older image_id /
    image_file_name naming and an unnamed data variable, as in MajajHong2015.public."""
    rng = np.random.default_rng(1)
    stimuli = [f"img{i:02d}" for i in range(6)]
    reps = {s: 2 if s == "img03" else 3 for s in stimuli}  # img03 lost a repetition
    order = [(s, r) for s in stimuli for r in range(reps[s])]
    order = [order[i] for i in rng.permutation(len(order))]  # presentations in recorded order
    values = rng.standard_normal((len(order), 5, len(BINS))).astype(np.float32)
    id_name = "image_id" if legacy else "stimulus_id"
    assembly = xr.DataArray(
        values,
        dims=("presentation", "neuroid", "time_bin"),
        coords={
            id_name: ("presentation", [s for s, _ in order]),
            "repetition": ("presentation", [r for _, r in order]),
            "neuroid_id": ("neuroid", [f"Chabo_L_{i}" for i in range(5)]),
            "region": ("neuroid", ["V4", "V4", "IT", "IT", "IT"]),
            "animal": ("neuroid", ["Chabo"] * 5),
            "time_bin_start": ("time_bin", [b[0] for b in BINS]),
            "time_bin_end": ("time_bin", [b[1] for b in BINS]),
        },
        attrs={"identifier": "test.Assembly2015", "stimulus_set_identifier": "test.stimuli"},
    )
    nc = tmp_path / "assy_test_Assembly2015.nc"
    if legacy:
        assembly.to_netcdf(nc)  # unnamed: __xarray_dataarray_variable__
    else:
        ds = assembly.to_dataset(name="data", promote_attrs=True)
        ds.to_netcdf(nc, encoding={"data": {"zlib": True, "complevel": 9}})
    images = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)  # grayscale, as HvM
    zpath = tmp_path / "image_test_stimuli.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        for s, img in zip(stimuli, images, strict=True):
            blob = _io.BytesIO()
            Image.fromarray(img).save(blob, format="PNG")
            archive.writestr(f"{s}.png", blob.getvalue())
    table = pd.DataFrame(
        {
            id_name: stimuli,
            "image_file_name" if legacy else "filename": [f"{s}.png" for s in stimuli],
            "category_name": ["cars", "cars", "faces", "faces", "boats", "boats"],
            "object_name": ["car1", "car2", "face1", "face2", "boat1", "boat2"],
            "variation": [0, 3, 6, 0, 3, 6],
        }
    )
    csv = tmp_path / "image_test_stimuli.csv"
    table.to_csv(csv, index=False)
    return nc, csv, zpath, order, values, images


@pytest.mark.parametrize("legacy", [False, True])
def test_import_brainio_converts_the_assembly(tmp_path, legacy):
    nc, csv, zpath, order, values, images = brainio_files(tmp_path, legacy)
    out = tmp_path / "neural.nc"
    data = import_brainio(nc, csv, zpath, out, split_column="variation", report_values=["6"])
    assert data.responses.shape == (3, 6, 5)
    expected = values[:, :, 1:3].mean(axis=2)  # bins inside 70-170 ms
    for row, (stimulus, rep) in enumerate(order):
        np.testing.assert_allclose(
            data.responses[rep, int(stimulus[-2:])], expected[row], rtol=1e-6
        )
    assert np.isnan(data.responses[2, 3]).all() and not np.isnan(data.responses[:, :3]).any()
    np.testing.assert_array_equal(data.images, np.repeat(images[..., None], 3, axis=3))
    np.testing.assert_array_equal(data.region, ["V4", "V4", "IT", "IT", "IT"])
    assert data.grouping == "object_name" and data.groups[1] == "car2"
    np.testing.assert_array_equal(data.split, ["fit", "fit", "report", "fit", "fit", "report"])
    back = read_neural(out)
    np.testing.assert_array_equal(back.responses, data.responses)
    assert back.presentation["category"][2] == "faces" and "brainio" in back.source


def test_import_brainio_time_bins_resizing_and_errors(tmp_path):
    nc, csv, zpath, _, values, _ = brainio_files(tmp_path)
    every = import_brainio(nc, csv, zpath, time_bins=None, image_size=8)
    assert every.images.shape == (6, 8, 8, 3)
    with pytest.raises(NeuralDataError, match="no time bin lies inside 300-400"):
        import_brainio(nc, csv, zpath, time_bins=(300, 400))
    pd.read_csv(csv).iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(NeuralDataError, match="short.csv.*img00"):
        import_brainio(nc, tmp_path / "short.csv", zpath)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("other.png", b"")
    with pytest.raises(NeuralDataError, match="empty.zip.*img00.png"):
        import_brainio(nc, csv, tmp_path / "empty.zip")


def test_behaviour_file_reads_as_human_comparison_arrays(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.multinomial(20, np.full(3, 1 / 3), size=5)
    ds = xr.Dataset(
        {
            "images": (
                ("presentation", "height", "width", "channel"),
                np.zeros((5, 4, 4, 3), np.uint8),
            ),
            "choice_counts": (("presentation", "choice"), counts),
        },
        coords={
            "choice": ["cat", "dog", "car"],
            "label": ("presentation", ["dog", "cat", "car", "dog", "dog"]),
        },
    )
    data = read_behaviour(write_dataset(ds, tmp_path / "b.nc"))
    np.testing.assert_array_equal(data["labels"], [1, 0, 2, 1, 1])
    np.testing.assert_array_equal(data["human_counts"], counts)
    assert data["class_names"].tolist() == ["cat", "dog", "car"] and data["images"].shape == (
        5,
        4,
        4,
        3,
    )
    bad = ds.assign_coords(label=("presentation", ["dog", "cow", "car", "dog", "dog"]))
    with pytest.raises(NeuralDataError, match="b2.nc.*'label'.*cow"):
        read_behaviour(write_dataset(bad, tmp_path / "b2.nc"))
    with pytest.raises(NeuralDataError, match="b3.nc.*'choice_counts'"):
        read_behaviour(write_dataset(ds.drop_vars("choice_counts"), tmp_path / "b3.nc"))
