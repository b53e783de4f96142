"""Activations of every named layer, from every checkpoint, in one forward pass with hooks.

Pooling (how a conv map [C, H, W] becomes one vector) is chosen per probe set
(`extract.pooling`): the default summarises every map as the means of its four quadrants
(`avg2x2`, 4C values: which features respond, and roughly where), so that the last conv stage
(`layer4`) keeps the spatial layout that the `pool` layer averages away — with `mean`, layer4
and pool would be the same vectors; the RDM probe set takes the full maps (`flatten`, seed
001's response patterns), and vectors wider than `extract.projection_dim` are randomly
projected to that width (`ssltrace.projection`, with its distance-preservation bound), or
replaced by their principal components fitted once per run (`extract.reduction: pca`,
`ssltrace.reduction`).

Memory stays bounded at any image size (224-px ImageNet networks, 1,000+ probe images): the
probe images go through the network one batch (`extract.batch_size`) at a time, and each
batch's pooled vectors are appended to one temporary raw file per layer beside the output
(`stream_activations`) and copied into the activation .npz member by member
(`io.RawArray`); memory holds one batch's activations of every layer, plus one layer of
all images only where a whole layer is needed (a PCA fit, `extract.distortion`).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssltrace import io, layout, projection, reduction, store
from ssltrace.device import resolve_device
from ssltrace.network import load_network
from ssltrace.store import EpochCache

POOLINGS = ("mean", "max", "flatten", "avg2x2")
DEFAULT_POOLING = "avg2x2"  # probe sets not named in a pooling mapping (`default` key)


def pooling_of(pooling: str | Mapping[str, str], probe: str) -> str:
    """The pooling of probe set `probe`: one name for all, or {probe: name, default: name}."""
    if isinstance(pooling, str):
        how = pooling
    else:
        how = pooling.get(probe, pooling.get("default", DEFAULT_POOLING))
    if how not in POOLINGS:
        raise ValueError(
            f"extract.pooling: unknown pooling {how!r} for probe set {probe!r}; expected one "
            f"of {', '.join(POOLINGS)}"
        )
    return how


def pool(activation: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce a conv map [B,C,H,W] to a vector per image; vectors pass through unchanged."""
    if activation.dim() == 2:
        return activation
    if how == "mean":
        return activation.mean(dim=(2, 3))
    if how == "max":
        return activation.amax(dim=(2, 3))
    if how == "avg2x2":
        return F.adaptive_avg_pool2d(activation, 2).flatten(1)
    if how == "flatten":
        return activation.flatten(1)
    raise ValueError(f"unknown pooling {how!r}; expected one of {', '.join(POOLINGS)}")


@torch.no_grad()
def activations(
    net,
    images: np.ndarray,
    layers: Sequence[str],
    pooling: str,
    batch_size: int,
    augment: dict | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    projection_dim: int | None = None,
    projection_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Pooled activations [n, d] per layer; images are normalised as in training, unaugmented.
    `shapes`, when given, receives each layer's unpooled shape per image ((C, H, W) or (d,)).

    A layer whose pooled width exceeds `projection_dim` is randomly projected to it (one
    matrix per width and seed, `ssltrace.projection`)."""
    modules = checked_modules(net, layers)
    to_input = plain_input(net, augment)
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    found = {} if shapes is None else shapes

    def hook(name, out):
        found[name] = tuple(out.shape[1:])
        store[name].append(pool(out, pooling).float().cpu())

    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: hook(name, out))
        for name in layers
    ]
    forward_batches(net, images, batch_size, to_input, hooks)
    return {
        name: projection.project(torch.cat(chunks).numpy(), projection_dim, projection_seed)
        for name, chunks in store.items()
    }


def checked_modules(net, layers: Sequence[str]) -> dict:
    modules = net.layer_modules()
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(
            f"extract.layers: {', '.join(missing)} not in this network's layers "
            f"({', '.join(modules)})"
        )
    return modules


def plain_input(net, augment: dict | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 images -> the network's input: normalised as in training, unaugmented."""
    from ssltrace.augment import Augmenter

    device = next(net.parameters()).device
    return Augmenter(augment, device, colour_space=net.colour_space).plain


def forward_batches(net, images: np.ndarray, batch_size: int, to_input, hooks) -> None:
    """Run the probe images through `net` batch by batch; the hooks collect; then removed."""
    device = next(net.parameters()).device
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            net.probe_forward(to_input(batch.to(device)))
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def stream_activations(
    net,
    images: np.ndarray,
    layers: Sequence[str],
    pooling: str,
    batch_size: int,
    folder: Path,
    augment: dict | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
    dtype: str = "float32",
) -> dict[str, io.RawArray]:
    """As `activations`, but written to disk as they come: each batch's pooled vectors
    (passed through `transform(layer, x)` when given — a map acting on each image alone,
    such as the seeded projection, so batch by batch equals all at once) are cast to `dtype`
    and appended to one raw file per layer in `folder`. Memory holds one batch's
    activations, never a layer of all images; the result names each layer's file."""
    modules = checked_modules(net, layers)
    to_input = plain_input(net, augment)
    folder.mkdir(parents=True, exist_ok=True)
    found = {} if shapes is None else shapes
    files = {name: open(folder / f"{name}.raw", "wb") for name in layers}  # noqa: SIM115
    widths: dict[str, int] = {}

    def hook(name, out):
        found[name] = tuple(out.shape[1:])
        x = pool(out, pooling).float().cpu().numpy()
        if transform is not None:
            x = transform(name, x)
        widths[name] = x.shape[1]
        np.ascontiguousarray(x.astype(dtype, copy=False)).tofile(files[name])

    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: hook(name, out))
        for name in layers
    ]
    try:
        forward_batches(net, images, batch_size, to_input, hooks)
    finally:
        for fh in files.values():
            fh.close()
    return {
        name: io.RawArray(folder / f"{name}.raw", dtype, (len(images), widths[name]))
        for name in layers
    }


class Reducer:
    """How a probe set's layers wider than `width` are reduced (`ssltrace.reduction`):
    the seeded projection, or the PCA stored in file `fitted` (read one layer at a time)."""

    def __init__(self, kind: str, width: int | None, seed: int, fitted: Path | None = None):
        if kind not in reduction.KINDS:
            raise ValueError(
                f"extract.reduction: unknown reduction {kind!r}; expected one of "
                f"{', '.join(reduction.KINDS)}"
            )
        if kind == "pca" and width is not None and fitted is None:
            raise ValueError("extract.reduction: pca needs its fitted file")
        self.kind, self.width, self.seed, self.fitted = kind, width, seed, fitted

    def reduces(self, n_features: int) -> bool:
        return self.width is not None and n_features > self.width

    def per_image(self, projected: set[str]) -> Callable[[str, np.ndarray], np.ndarray]:
        """The projection as a batch-by-batch transform (it acts on each image alone); the
        layers it reduces are added to `projected`."""

        def transform(layer: str, x: np.ndarray) -> np.ndarray:
            if self.reduces(x.shape[1]):
                projected.add(layer)
            return projection.project(x, self.width, self.seed)

        return transform

    def __call__(self, layer: str, x: np.ndarray) -> np.ndarray:
        if not self.reduces(x.shape[1]):
            return x
        if self.kind == "projection":
            return projection.project(x, self.width, self.seed)
        keys = [f"mean_{layer}", f"components_{layer}"]
        stored = io.load_npz(self.fitted, keys)
        return reduction.apply_pca(x, {k.split("_", 1)[0]: v for k, v in stored.items()})

    def bound(self, n_images: int) -> float:
        """The distance-distortion bound known in advance (projection only; else nan)."""
        if self.kind != "projection":
            return math.nan
        return reduction.jl_distance_bound(n_images, self.width)


def reduced_to_disk(
    pooled: dict[str, io.RawArray],
    reducer: Reducer,
    dtype: str,
    measure: bool,
) -> tuple[dict[str, io.RawArray | np.ndarray], dict[str, np.ndarray]]:
    """Reduce each spooled layer (one layer in memory at a time) and cast it to `dtype`;
    with `measure`, also each reduced layer's distance distortion `distortion_<layer>`
    = [median, max relative error of pairwise distances, bound known in advance]."""
    out, found = {}, {}
    for layer, raw in pooled.items():
        if not reducer.reduces(raw.shape[1]) and raw.dtype == np.dtype(dtype):
            out[layer] = raw
            continue
        x = raw.load()
        y = reducer(layer, x)
        if measure and y is not x:
            median, worst = reduction.distance_distortion(x, y)
            found[f"distortion_{layer}"] = np.array([median, worst, reducer.bound(len(x))])
        del x
        raw.path.unlink()
        if y.shape[1] < raw.shape[1]:  # reduced: images x projection_dim at most, small
            out[layer] = y.astype(dtype, copy=False)
            continue
        target = raw.path.with_suffix(f".{dtype}.raw")
        np.ascontiguousarray(y.astype(dtype, copy=False)).tofile(target)
        out[layer] = io.RawArray(target, dtype, y.shape)
    return out, found


def extract_many(
    checkpoints: Sequence[Path],
    probes: dict[str, Path],
    outputs: dict[str, Sequence[Path]],
    layers: Sequence[str] | None = None,
    pooling: str | Mapping[str, str] = "mean",
    batch_size: int = 1000,
    dtype: str = "float32",
    device: str = "auto",
    cache_dir: Path | None = None,
    keep_epochs: str | Sequence[int] = "all",
    log: Callable[[str], None] = print,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    unprojected: Sequence[str] = (),
    reduction_kind: str = "projection",
    reduction_fit_epoch: int | str | Sequence[int] = "last",
    distortion: bool = False,
) -> None:
    """Activations of every probe set for each checkpoint; each checkpoint is loaded once.

    outputs[probe][i] receives probe `probe`'s activations of checkpoints[i]. With `cache_dir`,
    the activations of the epochs in `keep_epochs` ("all" or a list) are also kept there under
    a key of checkpoint bytes, probe bytes and settings, so a rerun (e.g. after extending
    training) links them instead of extracting again. `pooling` is one name for every probe
    set or a mapping {probe: name, "default": name} (`pooling_of`); every file also records
    each layer's unpooled shape (`shape_<layer>`), so flattened maps can be unflattened.
    Probe sets in `unprojected` are never projected (the neural probe set: its spatial readout
    unflattens the maps). `reduction_kind` "pca" replaces the projection by a PCA fitted on
    checkpoint(s) `reduction_fit_epoch` ("last": the last of `checkpoints`; a list: their
    activations stacked) and stored beside the activations (`ssltrace.reduction`);
    `distortion` records each reduced layer's distance distortion in the file
    (`distortion_<layer>`).
    """
    for name, paths in outputs.items():
        if len(paths) != len(checkpoints):
            raise ValueError(f"{len(checkpoints)} checkpoints but {len(paths)} {name} outputs")
    poolings = {name: pooling_of(pooling, name) for name in probes}
    if projection_dim is not None and (isinstance(projection_dim, bool) or projection_dim < 1):
        raise ValueError(f"extract.projection_dim must be null or >= 1, got {projection_dim!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; expected 'float32' or 'float16'")
    for path in checkpoints:
        if not Path(path).exists():
            # The run's checkpoints/ folder is its training job's output: removing it makes
            # the workflow run that job again, which relinks (or retrains) what is missing.
            raise io.ArtifactReadError(
                f"checkpoint {path} is missing", path, advice=False
            ).remove_folder(Path(path).parent)
    data = {name: probe_arrays(path) for name, path in probes.items()}
    width = {name: None if name in unprojected else projection_dim for name in probes}
    settings = {
        name: [store.file_digest(path), list(layers or []), poolings[name], dtype]
        + ([width[name], projection_seed] if width[name] is not None else [])
        for name, path in probes.items()
    }
    cache = EpochCache(cache_dir, "activations", log=log)
    dev = resolve_device(device)
    reducers = {name: Reducer("projection", width[name], projection_seed) for name in probes}
    if reduction_kind == "pca":
        fit = fit_checkpoints(checkpoints, reduction_fit_epoch)
        for name in probes:
            if width[name] is None:
                continue
            fitted = Path(outputs[name][0]).parent / reduction.FILE
            fit_pca_file(
                fit,
                data[name],
                settings[name][0],
                layers,
                poolings[name],
                batch_size,
                width[name],
                dev,
                fitted,
                log,
            )
            reducers[name] = Reducer("pca", width[name], projection_seed, fitted)
            settings[name] += ["pca", store.file_digest(fitted)]
    elif reduction_kind != "projection":
        Reducer(reduction_kind, None, 0)  # raises, naming the setting
    if distortion:
        settings = {name: [*value, "distortion"] for name, value in settings.items()}
    for i, ckpt_path in enumerate(checkpoints):
        digest = store.file_digest(ckpt_path)
        keys = {name: store.make_key("activations", digest, settings[name]) for name in probes}
        todo = [name for name in probes if not cache.place(keys[name], outputs[name][i])]
        for name in set(probes) - set(todo):
            log(f"{Path(ckpt_path).name}: cached activations -> {outputs[name][i]}")
        if not todo:
            continue
        try:
            net, ckpt = load_network(Path(ckpt_path), dev)
        except io.ArtifactReadError as error:
            if error.removed:  # damaged, not refused: have its training job restore it
                raise error.remove_folder(Path(ckpt_path).parent) from error.__cause__
            raise
        names = list(layers) if layers else list(net.layer_modules())
        for name in todo:
            start = time.perf_counter()
            probe, out = data[name], outputs[name][i]
            shapes: dict[str, tuple[int, ...]] = {}
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".spool-", dir=Path(out).parent) as spool:
                acts, measured = layers_to_disk(
                    net,
                    probe["images"],
                    names,
                    poolings[name],
                    batch_size,
                    Path(spool),
                    ckpt.get("augment"),
                    shapes,
                    reducers[name],
                    dtype,
                    distortion,
                )
                save_activations(
                    out, acts, shapes, names, probe, ckpt, poolings[name], keys[name], measured
                )
            if keep_epochs == "all" or int(ckpt["epoch"]) in set(keep_epochs):
                cache.keep(keys[name], out)
            for key, value in measured.items():
                log(
                    f"epoch {ckpt['epoch']} {name} {key.removeprefix('distortion_')}: distance "
                    f"error median {value[0]:.4f}, max {value[1]:.4f} (bound {value[2]:.4f})"
                )
            log(
                f"epoch {ckpt['epoch']} {name}: {len(names)} layers, {len(probe['labels'])} "
                f"images, {time.perf_counter() - start:.2f} s -> {out}"
            )


def layers_to_disk(
    net, images, names, how, batch_size, spool, augment, shapes, reducer, dtype, measure
) -> tuple[dict[str, io.RawArray], dict[str, np.ndarray]]:
    """Every layer's pooled, reduced vectors spooled to `spool` (`stream_activations`).
    The projection alone acts batch by batch; a PCA or a distortion measurement needs
    each layer of all images, reduced then one layer at a time (`reduced_to_disk`)."""
    if reducer.kind == "projection" and not measure:
        projected: set[str] = set()
        transform = reducer.per_image(projected) if reducer.width is not None else None
        acts: dict = stream_activations(
            net, images, names, how, batch_size, spool, augment, shapes, transform, dtype
        )
        # A reduced layer is small (images x projection_dim): kept in scikit-learn's
        # column-major layout, so that files are byte for byte what they always were.
        for layer in projected:
            acts[layer] = np.asfortranarray(acts[layer].load())
        return acts, {}
    pooled = stream_activations(net, images, names, how, batch_size, spool, augment, shapes)
    return reduced_to_disk(pooled, reducer, dtype, measure)


def save_activations(out, acts, shapes, names, probe, ckpt, how, key, measured) -> None:
    """The activation file: layers, their unpooled shapes, the probe set's labels, then
    (where measured) the distortion figures — members in this order, as always written."""
    io.save_npz(
        out,
        {
            **acts,
            **{f"shape_{layer}": np.array(shapes[layer]) for layer in names},
            "layers": np.array(names),
            "labels": probe["labels"],
            "coarse": probe["coarse"],
            "class_names": probe["class_names"],
            "coarse_names": probe["coarse_names"],
            "epoch": np.int64(ckpt["epoch"]),
            "pooling": np.array(how),
            "cache_key": np.array(key),
            **({"part": probe["part"]} if "part" in probe else {}),
            **measured,
        },
    )


def probe_arrays(path: Path) -> dict:
    """A probe set's arrays, its images read batch by batch from the file as they are used
    (`io.load_npz_rows`): 15,000 images at 224 px would be 2.3 GB held for the whole job."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = [n.removesuffix(".npy") for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError):
        return io.load_npz(path)  # reports (and removes) a damaged file as every reader does
    arrays = io.load_npz(path, [n for n in names if n != "images"])
    if "images" in names:
        arrays["images"] = io.load_npz_rows(path, "images")
    return arrays


def fit_checkpoints(checkpoints: Sequence[Path], epochs: int | str | Sequence[int]) -> list:
    """The checkpoints a run's PCA is fitted on: the last extracted one ("last"), epoch
    `epochs`, or each epoch of a list (their activations stacked: one basis for the whole
    trajectory). A run that never trains, whose one checkpoint is epoch 0, fits on that."""
    if epochs == "last":
        return [Path(checkpoints[-1])]
    folder = Path(checkpoints[0]).parent
    wanted = [epochs] if isinstance(epochs, int) else list(epochs)
    paths = [folder / layout.epoch_file(int(e), ".pt") for e in wanted]
    if [Path(c).name for c in checkpoints] == [layout.epoch_file(0, ".pt")]:
        return [p for p in paths if p.exists()] or [Path(checkpoints[0])]
    for epoch, path in zip(wanted, paths, strict=True):
        if not path.exists():
            raise ValueError(
                f"extract.reduction_fit_epoch: no checkpoint of epoch {epoch} ({path}); "
                'choose epochs the run saves (train.checkpoint_epochs) or "last"'
            )
    return paths


@torch.no_grad()
def fit_pca_file(
    checkpoints, probe, probe_digest, layers, how, batch_size, width, dev, path, log
) -> None:
    """Fit each wide layer's PCA on the activations of the probe images at `checkpoints`
    (stacked when several) and store them in `path` (mean_/components_/explained_<layer>,
    `fit_epochs`), unless `path` already holds the fit of the same checkpoints and settings
    (every extraction of a run shares one basis)."""
    digests = [store.file_digest(c) for c in checkpoints]
    key = store.make_key("reduction", digests, probe_digest, list(layers or []), how, width)
    names_of = ", ".join(Path(c).name for c in checkpoints)
    if path.exists():
        found = io.load_npz(path, ["fit_key"], missing_ok=True)
        if str(found.get("fit_key", "")) == key:
            log(f"PCA reduction {path}: fitted before on {names_of}, reused")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs, pooled = [], []
    with tempfile.TemporaryDirectory(prefix=".spool-", dir=path.parent) as spool:
        for i, checkpoint in enumerate(checkpoints):
            net, ckpt = load_network(Path(checkpoint), dev)
            names = list(layers) if layers else list(net.layer_modules())
            folder = Path(spool) / str(i)
            pooled.append(
                stream_activations(
                    net, probe["images"], names, how, batch_size, folder, ckpt.get("augment")
                )
            )
            epochs.append(int(ckpt["epoch"]))
        arrays: dict[str, np.ndarray] = {}
        for layer in names:  # one layer (of every fit checkpoint) in memory at a time
            if pooled[0][layer].shape[1] > width:
                stacked = np.concatenate([found[layer].load() for found in pooled])
                fitted = reduction.fit_pca(stacked, width)
                arrays.update({f"{k}_{layer}": v for k, v in fitted.items()})
    reduced = sorted({k.split("_", 1)[1] for k in arrays}, key=names.index)
    io.save_npz(
        path,
        {
            "kind": np.array("pca"),
            "fit_epochs": np.array(epochs, dtype=np.int64),
            "fit_key": np.array(key),
            "layers": np.array(reduced),
            **arrays,
        },
    )
    log(f"PCA reduction fitted on {names_of} for {', '.join(reduced)} -> {path}")
