"""Neural recordings to score networks against (seed 003, Methods "Neural response fitting
procedure"): the neural-data file, its reader and validator, an importer for Brain-Score /
brainio assemblies, and a simulated offline dataset.

The neural-data file (NetCDF, read and written with xarray; format `ssltrace-neural/1`)
------------------------------------------------------------------------------------------
- `responses`: float variable (repetition, presentation, neuroid): each neuroid's response to
  each repetition of each stimulus; NaN where a repetition is missing.
- `images`: uint8 variable (presentation, height, width, channel=3), RGB; or instead the
  attribute `image_dir` (a folder relative to the file) plus the coordinate `filename`.
- `region`: str coordinate (neuroid): brain area of each neuroid (V1, V4, IT, ...);
  `neuroid_id` (neuroid) and `stimulus_id` (presentation) are optional.
- `category` and/or `object_name`: str coordinates (presentation): the grouping that
  cross-validation folds are stratified by (seed 003 / Brain-Score: object identity).
- `split` (optional): str coordinate (presentation), `fit` (choose readout hyper-parameters:
  seed 003's low/medium-variation images) or `report` (scored: its high-variation images).
- `true_reliability` (simulated data only): float variable (neuroid), the planted
  reliability of the repetition-averaged response.

Global attributes: `format` (`ssltrace-neural/1`), `grouping` (which coordinate stratifies the
folds; default `object_name` when present, else `category`), `regions` (optional,
comma-separated: regions that must each have neuroids), `source`, and `simulated` (present only
on simulated data: a sentence saying so).

A behaviour dataset uses the same style (`read_behaviour`): `images`, `choice_counts`
(presentation, choice), coordinates `choice` (class names) and `label` (true class per image).

A file with one repetition is valid, but no noise ceiling can be estimated from it:
`NeuralData.has_ceiling` is False, raw r is reported, and `read_neural(...,
require_ceiling=True)` refuses it naming the file and `responses`.

Images are stored at their recorded size; `resize_images` is the one way every method sees
them at the network's input size (centre crop to a square, then PIL bilinear resampling,
which filters over the whole source footprint when shrinking, i.e. anti-aliased).
"""

from __future__ import annotations

import io as _io
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssltrace import io
from ssltrace.data.validate import DataFormatError

FORMAT = "ssltrace-neural/1"
RESPONSE_DIMS = ("repetition", "presentation", "neuroid")
IMAGE_DIMS = ("presentation", "height", "width", "channel")
GROUPINGS = ("object_name", "category")  # stratification coordinates, preferred first
SPLITS = ("fit", "report")


class NeuralDataError(DataFormatError):
    """A neural-data or brainio file does not have the documented form; names file and variable."""


@dataclass(frozen=True)
class NeuralData:
    """One neural dataset in memory (the file's contents, validated).

    `groups` holds the stratification grouping named by `grouping`; `presentation` holds every
    per-presentation coordinate of the file (category, object_name, split, stimulus_id, ...).
    """

    images: np.ndarray  # uint8 [P, H, W, 3]
    responses: np.ndarray  # float32 [R, P, N], NaN = missing repetition
    region: np.ndarray  # str [N]
    neuroid_id: np.ndarray  # str [N]
    groups: np.ndarray  # str [P]
    grouping: str
    split: np.ndarray | None = None  # str [P] of "fit" / "report"
    presentation: dict[str, np.ndarray] = field(default_factory=dict)
    simulated: str | None = None
    source: str = ""
    true_reliability: np.ndarray | None = None  # float [N], simulated data only

    @property
    def n_repetitions(self) -> int:
        return int(self.responses.shape[0])

    @property
    def has_ceiling(self) -> bool:
        """Whether split-half reliability (the noise ceiling) can be estimated: >= 2 repetitions."""
        return self.n_repetitions >= 2

    @property
    def regions(self) -> list[str]:
        """Region names in order of first appearance."""
        return list(dict.fromkeys(self.region.tolist()))

    def mean_responses(self) -> np.ndarray:
        """Repetition-averaged responses [P, N] (mean over the repetitions present)."""
        return np.nanmean(self.responses, axis=0)


# ----------------------------------------------------------------------------- writing
def write_neural(path: str | Path, data: NeuralData) -> None:
    """Write `data` as a neural-data file (atomically, zlib-compressed)."""
    ds = _to_dataset(data)
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    with io.atomic_path(path, suffix=".nc") as tmp:
        if _hdf5_can_open(tmp):
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
            return
        with tempfile.TemporaryDirectory() as scratch:
            ds.to_netcdf(Path(scratch) / "data.nc", engine="netcdf4", encoding=encoding)
            shutil.copyfile(Path(scratch) / "data.nc", tmp)


def _hdf5_can_open(path) -> bool:
    """HDF5 (under netCDF-C) refuses a path holding a backslash (PermissionError), which a
    results_dir may hold (tests/test_security.py): such files go through a scratch copy or
    memory instead."""
    return "\\" not in str(Path(path).resolve())


def _open_netcdf(path):
    """The xarray dataset of a NetCDF file (netCDF4 engine, lazily; from memory where HDF5
    cannot open the path, `_hdf5_can_open`)."""
    import xarray as xr

    if _hdf5_can_open(path):
        return xr.open_dataset(path, engine="netcdf4")
    import netCDF4

    store = netCDF4.Dataset("in-memory.nc", memory=Path(path).read_bytes())
    return xr.open_dataset(xr.backends.NetCDF4DataStore(store))


def _to_dataset(data: NeuralData):
    import xarray as xr

    coords = {
        "region": ("neuroid", data.region.astype(str)),
        "neuroid_id": ("neuroid", data.neuroid_id.astype(str)),
    }
    for name, values in data.presentation.items():
        coords[name] = ("presentation", np.asarray(values).astype(str))
    coords[data.grouping] = ("presentation", data.groups.astype(str))
    if data.split is not None:
        coords["split"] = ("presentation", data.split.astype(str))
    variables = {
        "responses": (RESPONSE_DIMS, data.responses.astype(np.float32)),
        "images": (IMAGE_DIMS, data.images),
    }
    if data.true_reliability is not None:
        variables["true_reliability"] = ("neuroid", data.true_reliability.astype(np.float64))
    attrs = {"format": FORMAT, "grouping": data.grouping, "source": data.source}
    if data.simulated:
        attrs["simulated"] = data.simulated
    return xr.Dataset(variables, coords=coords, attrs=attrs)


# ----------------------------------------------------------------------------- reading
def read_neural(
    path: str | Path,
    grouping: str | None = None,
    regions: Sequence[str] | None = None,
    require_ceiling: bool = False,
) -> NeuralData:
    """Read and validate a neural-data file; every error names the file and the variable.

    Args:
        grouping: the presentation coordinate to stratify folds by (default: the file's
            `grouping` attribute, else `object_name`, else `category`).
        regions: regions that must each have neuroids (e.g. the config's), besides those the
            file's `regions` attribute declares.
        require_ceiling: refuse data whose noise ceiling cannot be estimated (< 2 repetitions)
            instead of flagging it (`NeuralData.has_ceiling`).
    """

    path = Path(path)
    try:
        ds = _open_netcdf(path)
    except (OSError, ValueError) as exc:
        raise NeuralDataError(f"{path}: not a readable NetCDF file ({exc})") from exc
    with ds:
        ds.load()
    return validate_neural(ds, path, grouping, regions, require_ceiling)


def validate_neural(
    ds, path, grouping=None, regions=None, require_ceiling=False, load_images=True
) -> NeuralData:
    """`NeuralData` from an xarray Dataset in the documented layout, or NeuralDataError.

    `load_images=False` checks the images' layout (shape, dtype, files present) without
    reading their pixels (the check at `snakemake -n`); `images` is then empty.
    """
    where = str(path)
    responses = _check_responses(ds, where, require_ceiling)
    n_presentations = responses.shape[1]
    images = _read_images(ds, Path(path), n_presentations, load_images)
    region = _neuroid_coord(ds, "region", where, responses.shape[2])
    _check_regions(region, regions, ds.attrs.get("regions"), where)
    neuroid_id = (
        _neuroid_coord(ds, "neuroid_id", where, responses.shape[2])
        if "neuroid_id" in ds.coords
        else np.array([f"n{i}" for i in range(responses.shape[2])])
    )
    _check_neuroids_have_data(responses, neuroid_id, where)
    grouping = _grouping(ds, grouping, where)
    presentation = {
        name: np.asarray(ds[name].values).astype(str)
        for name in ds.coords
        if ds[name].dims == ("presentation",) and name != "split"
    }
    split = _split(ds, where)
    truth = ds["true_reliability"].values if "true_reliability" in ds else None
    return NeuralData(
        images=images,
        responses=responses,
        region=region,
        neuroid_id=neuroid_id,
        groups=presentation[grouping],
        grouping=grouping,
        split=split,
        presentation=presentation,
        simulated=ds.attrs.get("simulated") or None,
        source=where,
        true_reliability=None if truth is None else np.asarray(truth, dtype=np.float64),
    )


def _check_responses(ds, where: str, require_ceiling: bool) -> np.ndarray:
    if "responses" not in ds:
        raise NeuralDataError(f"{where}: variable 'responses' is missing")
    var = ds["responses"]
    if var.ndim != 3 or var.dims != RESPONSE_DIMS:
        raise NeuralDataError(
            f"{where}: variable 'responses' must have rank 3 with dims {RESPONSE_DIMS}, got "
            f"rank {var.ndim} with dims {var.dims}"
        )
    if var.dtype.kind != "f":
        raise NeuralDataError(f"{where}: variable 'responses' must be float, got {var.dtype}")
    values = np.asarray(var.values, dtype=np.float32)
    if np.isinf(values).any():
        raise NeuralDataError(f"{where}: variable 'responses' has infinite values")
    if values.shape[0] < 2 and require_ceiling:
        raise NeuralDataError(
            f"{where}: variable 'responses' has {values.shape[0]} repetition; the noise ceiling "
            "(split-half reliability) needs >= 2 repetitions per stimulus. Report raw r only "
            "(no ceiling correction) or supply repeated presentations."
        )
    if min(values.shape) == 0:
        raise NeuralDataError(f"{where}: variable 'responses' is empty, shape {values.shape}")
    return values


def _read_images(ds, path: Path, n_presentations: int, load: bool = True) -> np.ndarray:
    where = str(path)
    if "images" not in ds:
        if "image_dir" in ds.attrs and "filename" in ds.coords:
            folder = path.parent / str(ds.attrs["image_dir"])
            names = np.asarray(ds["filename"].values).astype(str)
            if len(names) != n_presentations:
                raise NeuralDataError(
                    f"{where}: coordinate 'filename' names {len(names)} images; they must "
                    f"match the {n_presentations} presentations of 'responses'"
                )
            return _images_from_folder(folder, names, where, load)
        raise NeuralDataError(
            f"{where}: variable 'images' is missing (or give attribute 'image_dir' and "
            "coordinate 'filename')"
        )
    var = ds["images"]
    if var.ndim != 4 or var.shape[-1] != 3:
        raise NeuralDataError(
            f"{where}: variable 'images' must be [presentation, height, width, 3], got dims "
            f"{var.dims} shape {var.shape}"
        )
    if var.dims[0] != "presentation" or var.shape[0] != n_presentations:
        raise NeuralDataError(
            f"{where}: variable 'images' has {var.shape[0]} images along {var.dims[0]!r}; they "
            f"must match the {n_presentations} presentations of 'responses' (dim 'presentation')"
        )
    if var.dtype != np.uint8:
        raise NeuralDataError(f"{where}: variable 'images' must be uint8, got {var.dtype}")
    if not load:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return np.ascontiguousarray(var.values)


def _images_from_folder(folder: Path, names: np.ndarray, where: str, load: bool = True):
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise NeuralDataError(
            f"{where}: coordinate 'filename' names {len(missing)} files missing from "
            f"{folder}, e.g. {missing[:3]}"
        )
    if not load:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return _stack_images([(folder / n).read_bytes() for n in names], names, where, None)


def _neuroid_coord(ds, name: str, where: str, n_neuroids: int) -> np.ndarray:
    if name not in ds.coords:
        raise NeuralDataError(f"{where}: coordinate '{name}' (one value per neuroid) is missing")
    coord = ds[name]
    if coord.dims != ("neuroid",) or coord.shape[0] != n_neuroids:
        raise NeuralDataError(
            f"{where}: coordinate '{name}' must have dims ('neuroid',) of length {n_neuroids}, "
            f"got {coord.dims} {coord.shape}"
        )
    return np.asarray(coord.values).astype(str)


def _check_regions(region: np.ndarray, wanted, declared, where: str) -> None:
    if np.any(np.char.strip(region) == ""):
        raise NeuralDataError(f"{where}: coordinate 'region' has empty names")
    needed = list(wanted or [])
    if declared:
        needed += [r.strip() for r in str(declared).split(",") if r.strip()]
    empty = [r for r in dict.fromkeys(needed) if not np.any(region == r)]
    if empty:
        raise NeuralDataError(
            f"{where}: coordinate 'region' has no neuroids for region(s) {empty}; regions "
            f"present: {sorted(set(region.tolist()))}"
        )


def _check_neuroids_have_data(responses: np.ndarray, neuroid_id: np.ndarray, where: str) -> None:
    valid = ~np.isnan(responses)
    dead = ~valid.any(axis=(0, 1))
    if dead.any():
        raise NeuralDataError(
            f"{where}: variable 'responses' is NaN for every repetition and presentation of "
            f"{int(dead.sum())} neuroid(s): {neuroid_id[dead][:5].tolist()}"
        )
    holes = ~valid.any(axis=0)  # [P, N]: no repetition at all
    if holes.any():
        p, n = np.nonzero(holes)
        raise NeuralDataError(
            f"{where}: variable 'responses' has no repetition for {holes.sum()} "
            f"(presentation, neuroid) pairs, e.g. presentation {p[0]} of neuroid "
            f"{neuroid_id[n[0]]}; drop those presentations or neuroids"
        )


def _grouping(ds, grouping: str | None, where: str) -> str:
    if grouping is None:
        grouping = ds.attrs.get("grouping") or next((g for g in GROUPINGS if g in ds.coords), None)
    if grouping is None or grouping not in ds.coords:
        raise NeuralDataError(
            f"{where}: coordinate {grouping or ' or '.join(GROUPINGS)!r} (the per-presentation "
            "grouping that stratifies cross-validation) is missing"
        )
    if ds[grouping].dims != ("presentation",):
        raise NeuralDataError(f"{where}: coordinate '{grouping}' must have dims ('presentation',)")
    return grouping


def _split(ds, where: str) -> np.ndarray | None:
    if "split" not in ds.coords:
        return None
    split = np.asarray(ds["split"].values).astype(str)
    found = set(split.tolist())
    if not found <= set(SPLITS) or len(found) < 2:
        raise NeuralDataError(
            f"{where}: coordinate 'split' must hold both 'fit' and 'report' (and nothing "
            f"else), got {sorted(found)}"
        )
    return split


def check_neural_file(
    path: str | Path, require_ceiling: bool = False, regions: Sequence[str] | None = None
) -> NeuralData:
    """Everything `read_neural` checks except decoding the images (cheap enough for a dry run:
    the responses and coordinates are read, the images' layout only); `images` is empty."""

    path = Path(path)
    if not path.is_file():
        raise NeuralDataError(f"{path}: neural-data file not found")
    try:
        ds = _open_netcdf(path)
    except (OSError, ValueError) as exc:
        raise NeuralDataError(f"{path}: not a readable NetCDF file ({exc})") from exc
    with ds:
        return validate_neural(ds, path, None, regions, require_ceiling, load_images=False)


# ----------------------------------------------------------------------------- probe set
def neural_probe(
    neural: Mapping[str, str | Path],
    behaviour: Mapping[str, str | Path] | None = None,
    image_size: int = 32,
    require_ceiling: bool = False,
) -> dict[str, np.ndarray]:
    """The `neural` probe set: the images of every neural dataset, then of every behaviour
    dataset, each block resized by `resize_images` (the same pixels for every method), with
    what the analyses need of each block stored beside them (`block_arrays`).

    `labels` = block index into `class_names` (the dataset names); `coarse` = 0 for a neural
    block, 1 for a behaviour block (`coarse_names`); `block_kind` says the same per block.
    """
    images, labels, arrays, kinds = [], [], {}, []
    blocks = [(n, p, "neural") for n, p in neural.items()]
    blocks += [(n, p, "behaviour") for n, p in (behaviour or {}).items()]
    for b, (_, path, kind) in enumerate(blocks):
        if kind == "neural":
            data = read_neural(path, require_ceiling=require_ceiling)
            block_images, block = data.images, _neural_block(data)
        else:
            found = read_behaviour(path)
            block_images = found.pop("images")
            block = found
        images.append(resize_images(block_images, image_size))
        labels.append(np.full(len(block_images), b, np.int64))
        arrays.update({f"b{b}_{key}": value for key, value in block.items()})
        kinds.append(kind)
    labels = np.concatenate(labels)
    return {
        "images": np.concatenate(images),
        "labels": labels,
        "coarse": np.array([KINDS.index(kinds[b]) for b in labels], np.int64),
        "class_names": np.array([name for name, _, _ in blocks]),
        "coarse_names": np.array(KINDS),
        "block_kind": np.array(kinds),
        "source_index": np.concatenate(
            [np.arange((labels == b).sum()) for b in range(len(blocks))]
        ),
        **arrays,
    }


KINDS = ("neural", "behaviour")


def _neural_block(data: NeuralData) -> dict[str, np.ndarray]:
    split = data.split if data.split is not None else np.array([], dtype=str)
    return {
        "responses": data.responses.astype(np.float32),
        "region": data.region,
        "neuroid_id": data.neuroid_id,
        "groups": data.groups,
        "split": split,
        "simulated": np.array(data.simulated or ""),
    }


def block_arrays(probe: Mapping[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """The arrays stored for block `b` of a neural probe set (prefix removed)."""
    prefix = f"b{b}_"
    return {k[len(prefix) :]: v for k, v in probe.items() if k.startswith(prefix)}


def probe_block_data(probe: Mapping[str, np.ndarray], b: int) -> NeuralData:
    """Block `b` (a neural dataset) of a neural probe set as `NeuralData` (images resized)."""
    arrays = block_arrays(probe, b)
    split = arrays["split"] if arrays["split"].size else None
    return NeuralData(
        images=probe["images"][probe["labels"] == b],
        responses=arrays["responses"],
        region=arrays["region"].astype(str),
        neuroid_id=arrays["neuroid_id"].astype(str),
        groups=arrays["groups"].astype(str),
        grouping="groups",
        split=None if split is None else split.astype(str),
        simulated=str(arrays["simulated"]) or None,
        source=str(probe["class_names"][b]),
    )


# ----------------------------------------------------------------------------- behaviour file
def read_behaviour(path: str | Path) -> dict[str, np.ndarray]:
    """A user behaviour dataset in the same NetCDF style, as the human-comparison arrays
    (`images`, `labels`, `class_names`, `human_counts`; docs/ARCHITECTURE.md).

    Layout: `images` uint8 (presentation, height, width, 3); `choice_counts` (presentation,
    choice): how many people chose each class for each image; coordinate `choice` (class
    names); coordinate `label` (presentation): the true class, as a name in `choice` or an
    index. Errors name the file and the variable.
    """

    where = str(path)
    try:
        ds = _open_netcdf(path)
    except (OSError, ValueError) as exc:
        raise NeuralDataError(f"{where}: not a readable NetCDF file ({exc})") from exc
    with ds:
        ds.load()
    if "choice_counts" not in ds or ds["choice_counts"].dims != ("presentation", "choice"):
        raise NeuralDataError(
            f"{where}: variable 'choice_counts' (presentation, choice) is missing"
        )
    counts = np.asarray(ds["choice_counts"].values, dtype=np.float64)
    if not np.isfinite(counts).all() or counts.min() < 0 or (counts.sum(axis=1) <= 0).any():
        raise NeuralDataError(
            f"{where}: variable 'choice_counts' must be finite, non-negative, >= 1 per image"
        )
    names = _choice_names(ds, counts.shape[1], where)
    return {
        "images": _read_images(ds, Path(path), len(counts)),
        "labels": _labels(ds, names, where),
        "class_names": names,
        "human_counts": counts,
    }


def behaviour_size(path: str | Path) -> int:
    """Images of a behaviour file (its `choice_counts` rows), read lazily."""

    try:
        with _open_netcdf(path) as ds:
            return int(ds["choice_counts"].shape[0])
    except (OSError, ValueError, KeyError) as exc:
        raise NeuralDataError(f"{path}: no readable variable 'choice_counts' ({exc})") from exc


def _choice_names(ds, n_choices: int, where: str) -> np.ndarray:
    if "choice" not in ds.coords:
        return np.array([str(i) for i in range(n_choices)])
    return np.asarray(ds["choice"].values).astype(str)


def _labels(ds, names: np.ndarray, where: str) -> np.ndarray:
    if "label" not in ds.coords or ds["label"].dims != ("presentation",):
        raise NeuralDataError(f"{where}: coordinate 'label' (the true class per image) is missing")
    values = np.asarray(ds["label"].values)
    if values.dtype.kind in "iu":
        labels = values.astype(np.int64)
    else:
        index = {name: i for i, name in enumerate(names.tolist())}
        unknown = sorted(set(values.astype(str).tolist()) - set(index))
        if unknown:
            raise NeuralDataError(
                f"{where}: coordinate 'label' has classes {unknown[:3]} not in 'choice'"
            )
        labels = np.array([index[v] for v in values.astype(str)], dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(names):
        raise NeuralDataError(
            f"{where}: coordinate 'label' must index 'choice' (0..{len(names) - 1})"
        )
    return labels


# ----------------------------------------------------------------------------- images
def _decode(blob: bytes, name: str, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise NeuralDataError(f"{where}: image {name!r} cannot be decoded ({exc})") from exc


def _stack_images(blobs, names, where: str, size: int | None) -> np.ndarray:
    images = [_decode(b, n, where) for b, n in zip(blobs, names, strict=True)]
    if size is not None:
        return np.concatenate([resize_images(img[None], size) for img in images])
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise NeuralDataError(
            f"{where}: images have different sizes {sorted(shapes)[:3]}; give image_size"
        )
    return np.stack(images)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, H, W, 3] -> [n, size, size, 3]: centre crop to a square, PIL bilinear resize.

    The one resizing every method's probe images go through (PIL's bilinear filter widens
    with the shrink factor, so downsampling is anti-aliased).
    """
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(np.ascontiguousarray(img[top : top + side, left : left + side]))
        out[i] = np.asarray(crop.resize((size, size), Image.BILINEAR))
    return out


# ----------------------------------------------------------------------------- brainio import
def import_brainio(
    assembly_nc: str | Path,
    stimulus_csv: str | Path,
    images_zip: str | Path,
    out: str | Path | None = None,
    time_bins: tuple[float, float] | None = (70, 170),
    split_column: str | None = None,
    report_values: Sequence[str] = (),
    image_size: int | None = None,
    region: str | None = None,
) -> NeuralData:
    """Convert a Brain-Score/brainio assembly with its stimulus set into the neural-data file.

    The brainio layout (brainio docs/SPECIFICATION.md, `brainio.packaging.write_netcdf`): one
    NetCDF data variable (`data`, `__xarray_dataarray_variable__` or the assembly's identifier)
    with dims presentation x neuroid [x time_bin]; presentation coords `stimulus_id` (older
    assemblies: `image_id`) and `repetition`, one entry per repeated presentation; neuroid
    coords `neuroid_id` and `region`; time_bin coords `time_bin_start`/`time_bin_end` (ms).
    The stimulus-set CSV has `stimulus_id` (or `image_id`), `filename` (or `image_file_name`)
    naming a member of the zip, and metadata such as `category_name`, `object_name`,
    `variation`.

    Args:
        time_bins: (start, end) in ms: the time bins lying inside are averaged (seed 003 and
            MajajHong2015: 70-170 ms); None averages every bin.
        split_column, report_values: a CSV column whose values in `report_values` become the
            `report` split and all others `fit` (seed 003: `variation`, report "6" = high).
        image_size: resize images to this square size (default: keep; sizes must agree).
        region: region name for every neuroid when the assembly has no `region` coordinate.
        out: write the neural-data file here (None: only return it).
    """
    import pandas as pd

    where = str(assembly_nc)
    assembly = _open_assembly(assembly_nc)
    values = _average_time_bins(assembly, time_bins, where)
    ids = _coord(assembly, ("stimulus_id", "image_id"), "presentation", where)
    table = pd.read_csv(stimulus_csv, dtype=str, keep_default_na=False)
    table = _stimulus_table(table, ids, str(stimulus_csv))
    responses = _repetitions(values, ids, assembly, table["stimulus_id"].tolist())
    grouping, groups = _csv_grouping(table, str(stimulus_csv))
    data = NeuralData(
        images=_zip_images(images_zip, table["filename"].tolist(), image_size),
        responses=responses,
        region=_regions(assembly, region, where),
        neuroid_id=_neuroid_ids(assembly),
        groups=groups,
        grouping=grouping,
        split=_csv_split(table, split_column, report_values, str(stimulus_csv)),
        presentation=_presentation_coords(table),
        source=f"brainio {assembly.attrs.get('identifier', Path(where).name)}",
    )
    if out is not None:
        write_neural(out, data)
    return data


def _open_assembly(path):

    try:
        ds = _open_netcdf(path)
    except (OSError, ValueError) as exc:
        raise NeuralDataError(f"{path}: not a readable NetCDF file ({exc})") from exc
    with ds:
        ds.load()
    names = [n for n, v in ds.data_vars.items() if {"presentation", "neuroid"} <= set(v.dims)]
    if len(names) != 1:
        raise NeuralDataError(
            f"{path}: expected one data variable with dims presentation x neuroid [x time_bin], "
            f"found {names or list(ds.data_vars)}"
        )
    var = ds[names[0]]
    extra = set(var.dims) - {"presentation", "neuroid", "time_bin"}
    if extra:
        raise NeuralDataError(f"{path}: variable {names[0]!r} has unexpected dims {sorted(extra)}")
    var.attrs.update(ds.attrs)
    return var


def _average_time_bins(var, time_bins, where: str) -> np.ndarray:
    """[presentation, neuroid] responses averaged over the chosen time bins."""
    if "time_bin" not in var.dims:
        return var.transpose("presentation", "neuroid").values.astype(np.float32)
    keep = np.ones(var.sizes["time_bin"], bool)
    if time_bins is not None:
        if "time_bin_start" not in var.coords or "time_bin_end" not in var.coords:
            raise NeuralDataError(
                f"{where}: coordinates 'time_bin_start'/'time_bin_end' are missing"
            )
        start = var["time_bin_start"].values.astype(float)
        end = var["time_bin_end"].values.astype(float)
        keep = (start >= time_bins[0]) & (end <= time_bins[1])
        if not keep.any():
            bins = list(zip(start.tolist(), end.tolist(), strict=True))
            raise NeuralDataError(
                f"{where}: no time bin lies inside {time_bins[0]}-{time_bins[1]} ms; bins: {bins}"
            )
    picked = var.isel(time_bin=np.flatnonzero(keep)).transpose("presentation", "neuroid", ...)
    return picked.values.astype(np.float32).mean(axis=2)


def _coord(var, names, dim: str, where: str) -> np.ndarray:
    for name in names:
        if name in var.coords and var[name].dims == (dim,):
            return np.asarray(var[name].values).astype(str)
    raise NeuralDataError(f"{where}: coordinate {' or '.join(names)} on {dim} is missing")


def _stimulus_table(table, ids: np.ndarray, where: str):
    table = table.copy()
    if "stimulus_id" not in table and "image_id" in table:
        table["stimulus_id"] = table["image_id"]
    if "filename" not in table and "image_file_name" in table:
        table["filename"] = table["image_file_name"]
    for column in ("stimulus_id", "filename"):
        if column not in table:
            raise NeuralDataError(f"{where}: column '{column}' is missing")
    present = set(ids.tolist())
    unknown = present - set(table["stimulus_id"])
    if unknown:
        raise NeuralDataError(
            f"{where}: {len(unknown)} stimulus_id(s) of the assembly are not in column "
            f"'stimulus_id', e.g. {sorted(unknown)[:3]}"
        )
    return table[table["stimulus_id"].isin(present)].drop_duplicates("stimulus_id")


def _repetitions(values: np.ndarray, ids: np.ndarray, var, order: list[str]) -> np.ndarray:
    """[R, P, N]: each stimulus's presentations in order of `repetition` (then file order)."""
    rep = var["repetition"].values if "repetition" in var.coords else np.zeros(len(ids))
    index = {s: i for i, s in enumerate(order)}
    stim = np.array([index[s] for s in ids])
    ranked = np.lexsort((np.arange(len(ids)), rep, stim))  # by stimulus, repetition, position
    slot = np.empty(len(ids), int)
    counts = np.bincount(stim, minlength=len(order))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot[ranked] = np.arange(len(ids)) - starts[stim[ranked]]
    out = np.full((counts.max(), len(order), values.shape[1]), np.nan, np.float32)
    out[slot, stim] = values
    return out


def _zip_images(path, filenames: list[str], size: int | None) -> np.ndarray:
    where = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise NeuralDataError(f"{where}: not a readable zip archive ({exc})") from exc
    with archive:
        members = {Path(n).name: n for n in archive.namelist() if not n.endswith("/")}
        members.update({n: n for n in archive.namelist()})
        missing = [f for f in filenames if f not in members and Path(f).name not in members]
        if missing:
            raise NeuralDataError(
                f"{where}: {len(missing)} files named by the stimulus set's 'filename' column "
                f"are missing, e.g. {missing[:3]}"
            )
        blobs = [archive.read(members.get(f) or members[Path(f).name]) for f in filenames]
    return _stack_images(blobs, filenames, where, size)


def _regions(var, region: str | None, where: str) -> np.ndarray:
    if "region" in var.coords:
        return np.asarray(var["region"].values).astype(str)
    if region is None:
        raise NeuralDataError(f"{where}: coordinate 'region' is missing; give region=NAME")
    return np.full(var.sizes["neuroid"], region)


def _neuroid_ids(var) -> np.ndarray:
    if "neuroid_id" in var.coords:
        return np.asarray(var["neuroid_id"].values).astype(str)
    return np.array([f"n{i}" for i in range(var.sizes["neuroid"])])


_GROUP_COLUMNS = {"object_name": ("object_name",), "category": ("category", "category_name")}


def _csv_grouping(table, where: str) -> tuple[str, np.ndarray]:
    for name, columns in _GROUP_COLUMNS.items():
        for column in columns:
            if column in table:
                return name, table[column].to_numpy(str)
    raise NeuralDataError(
        f"{where}: no grouping column (object_name, category or category_name) to stratify "
        "cross-validation folds by"
    )


def _presentation_coords(table) -> dict[str, np.ndarray]:
    coords = {"stimulus_id": table["stimulus_id"].to_numpy(str)}
    for name, columns in _GROUP_COLUMNS.items():
        column = next((c for c in columns if c in table), None)
        if column is not None:
            coords[name] = table[column].to_numpy(str)
    return coords


def _csv_split(table, column: str | None, report_values, where: str) -> np.ndarray | None:
    if column is None:
        return None
    if column not in table:
        raise NeuralDataError(f"{where}: split column {column!r} is missing")
    report = table[column].isin([str(v) for v in report_values]).to_numpy()
    if report.all() or not report.any():
        raise NeuralDataError(
            f"{where}: column {column!r} with report values {list(report_values)} must leave "
            "both fit and report presentations"
        )
    return np.where(report, "report", "fit")


# ----------------------------------------------------------------------------- simulated data
SIMULATED = (
    "SIMULATED: model units computed from the project's synthetic images (V1-like: rectified "
    "Gabor responses; IT-like: category-selective + nonlinear invariant features) with Gaussian "
    "trial noise at a planted reliability; not recordings from any brain"
)


def simulate_neural(
    seed: int = 0,
    categories: int = 8,
    objects_per_category: int = 5,
    images_per_object: int = 16,
    neuroids_per_region: int = 64,
    repetitions: int = 8,
    reliability: tuple[float, float] = (0.5, 0.9),
    missing: float = 0.0,
) -> NeuralData:
    """A simulated dataset ("simulated" in its attribute, source and region names' docs).

    Images: `objects_per_category` fine classes of each of the first `categories` coarse
    classes of `ssltrace.data.synthetic` (rendered from stream split=2, so they are not
    training images). Region `V1-like`: half simple cells (half-rectified Gabor responses at a
    random phase), half complex cells (Gabor energy), at random positions, orientations and
    spatial frequencies. Region `IT-like`: a mix of category selectivity (a sparse random
    preference over categories) and a rectified random combination of position-invariant
    (spatially max-pooled) Gabor energies. Each unit's repetitions add Gaussian noise whose
    variance gives the repetition-averaged response a reliability drawn uniformly from
    `reliability`, recorded as `true_reliability`; `missing` drops that fraction of
    repetitions (NaN), keeping one per presentation.
    """
    from ssltrace.data.synthetic import class_names, render_fine_class

    rng = np.random.default_rng([seed, 17])
    fine_names, coarse_names, _ = class_names()
    fines = [c * 5 + o for c in range(categories) for o in range(objects_per_category)]
    images = np.concatenate([render_fine_class(f, images_per_object, seed, split=2) for f in fines])
    category = np.repeat([coarse_names[f // 5] for f in fines], images_per_object)
    obj = np.repeat([fine_names[f] for f in fines], images_per_object)
    gray = images.astype(np.float32).mean(axis=3) / 255.0
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    signal = np.concatenate(
        [
            _v1_units(gray, neuroids_per_region, rng),
            _it_units(gray, category, neuroids_per_region, rng),
        ],
        axis=1,
    )
    truth = rng.uniform(*reliability, signal.shape[1])
    responses = _add_trial_noise(signal, truth, repetitions, missing, rng)
    return NeuralData(
        images=images,
        responses=responses,
        region=np.repeat(["V1-like", "IT-like"], neuroids_per_region),
        neuroid_id=np.array([f"sim{i:03d}" for i in range(signal.shape[1])]),
        groups=obj,
        grouping="object_name",
        presentation={"category": category, "object_name": obj},
        simulated=SIMULATED,
        source=f"simulated (ssltrace.data.neural.simulate_neural, seed {seed})",
        true_reliability=truth,
    )


def _gabors(rng, n: int, size: int = 32):
    """n Gabor pairs (even, odd) [n, size, size] at random position/orientation/frequency."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(6, size - 6, (2, n, 1, 1))
    theta = rng.uniform(0, np.pi, (n, 1, 1))
    freq = rng.uniform(0.08, 0.3, (n, 1, 1))  # cycles per pixel
    sigma = 0.5 / freq
    u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
    envelope = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    phase = 2 * np.pi * freq * u
    return (envelope * np.cos(phase)).astype(np.float32), (envelope * np.sin(phase)).astype(
        np.float32
    )


def _v1_units(gray: np.ndarray, n: int, rng) -> np.ndarray:
    even, odd = _gabors(rng, n)
    a = np.einsum("phw,nhw->pn", gray, even)
    b = np.einsum("phw,nhw->pn", gray, odd)
    phi = rng.uniform(0, 2 * np.pi, n)
    simple = np.maximum(a * np.cos(phi) + b * np.sin(phi), 0.0)
    complex_ = np.sqrt(a**2 + b**2)
    out = np.where(np.arange(n) % 2 == 0, simple, complex_)
    return _standardise(out)


def _it_units(gray: np.ndarray, category: np.ndarray, n: int, rng) -> np.ndarray:
    even, odd = _gabors(rng, 24)  # centred anywhere; circular convolution makes position moot
    spectrum = np.fft.rfft2(gray)[:, None]
    energy = np.hypot(
        np.fft.irfft2(spectrum * np.fft.rfft2(even)[None], s=gray.shape[1:]),
        np.fft.irfft2(spectrum * np.fft.rfft2(odd)[None], s=gray.shape[1:]),
    )
    invariant = _standardise(energy.max(axis=(2, 3)))  # [P, 24]: position-invariant
    nonlinear = np.maximum(invariant @ rng.standard_normal((24, n)) / np.sqrt(24), 0) ** 1.5
    names, index = np.unique(category, return_inverse=True)
    preference = rng.standard_normal((len(names), n)) * (rng.random((len(names), n)) < 0.3)
    selective = preference[index]
    mix = rng.uniform(0.3, 0.7, n)
    return _standardise(mix * _standardise(selective) + (1 - mix) * _standardise(nonlinear))


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-8)


def _add_trial_noise(signal, truth, repetitions: int, missing: float, rng) -> np.ndarray:
    """[R, P, N]: signal (+1 baseline) + noise making the R-average's reliability `truth`.

    reliability = var(s) / (var(s) + sigma^2 / R)  =>  sigma^2 = R var(s) (1 - rel) / rel.
    With missing repetitions the planted value holds for the full R (approximately otherwise).
    """
    sigma = np.sqrt(repetitions * signal.var(0) * (1 - truth) / truth)
    noise = rng.standard_normal((repetitions, *signal.shape)) * sigma
    responses = (signal + 1.0 + noise).astype(np.float32)
    if missing > 0:
        drop = rng.random(responses.shape[:2]) < missing
        drop[rng.integers(repetitions, size=signal.shape[0]), np.arange(signal.shape[0])] = False
        responses[drop] = np.nan
    return responses
