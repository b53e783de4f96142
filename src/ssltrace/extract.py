"""Activations of every named layer, from every checkpoint, in one forward pass with hooks.

Pooling (how a conv map [C, H, W] becomes one vector) is chosen per probe set
(`extract.pooling`): the default summarises every map as the means of its four quadrants
(`avg2x2`, 4C values: which features respond, and roughly where), so that the last conv stage
(`layer4`) keeps the spatial layout that the `pool` layer averages away — with `mean`, layer4
and pool would be the same vectors; the RDM probe set takes the full maps (`flatten`, seed
001's response patterns), and vectors wider than `extract.projection_dim` are randomly
projected to that width (`ssltrace.projection`, with its distance-preservation bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssltrace import io, projection, store
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
    from ssltrace.augment import Augmenter

    modules = net.layer_modules()
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(
            f"extract.layers: {', '.join(missing)} not in this network's layers "
            f"({', '.join(modules)})"
        )
    device = next(net.parameters()).device
    to_input = Augmenter(augment, device, colour_space=net.colour_space).plain
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    found = {} if shapes is None else shapes

    def hook(name, out):
        found[name] = tuple(out.shape[1:])
        store[name].append(pool(out, pooling).float().cpu())

    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: hook(name, out))
        for name in layers
    ]
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = to_input(batch.to(device))
            net.probe_forward(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {
        name: projection.project(torch.cat(chunks).numpy(), projection_dim, projection_seed)
        for name, chunks in store.items()
    }


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
) -> None:
    """Activations of every probe set for each checkpoint; each checkpoint is loaded once.

    outputs[probe][i] receives probe `probe`'s activations of checkpoints[i]. With `cache_dir`,
    the activations of the epochs in `keep_epochs` ("all" or a list) are also kept there under
    a key of checkpoint bytes, probe bytes and settings, so a rerun (e.g. after extending
    training) links them instead of extracting again. `pooling` is one name for every probe
    set or a mapping {probe: name, "default": name} (`pooling_of`); every file also records
    each layer's unpooled shape (`shape_<layer>`), so flattened maps can be unflattened.
    Probe sets in `unprojected` are never projected (the neural probe set: its spatial readout
    unflattens the maps).
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
    data = {name: io.load_npz(path) for name, path in probes.items()}
    width = {name: None if name in unprojected else projection_dim for name in probes}
    settings = {
        name: [store.file_digest(path), list(layers or []), poolings[name], dtype]
        + ([width[name], projection_seed] if width[name] is not None else [])
        for name, path in probes.items()
    }
    cache = EpochCache(cache_dir, "activations", log=log)
    dev = resolve_device(device)
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
            acts = activations(
                net,
                probe["images"],
                names,
                poolings[name],
                batch_size,
                ckpt.get("augment"),
                shapes,
                width[name],
                projection_seed,
            )
            io.save_npz(
                out,
                {
                    **{layer: value.astype(dtype) for layer, value in acts.items()},
                    **{f"shape_{layer}": np.array(shapes[layer]) for layer in names},
                    "layers": np.array(names),
                    "labels": probe["labels"],
                    "coarse": probe["coarse"],
                    "class_names": probe["class_names"],
                    "coarse_names": probe["coarse_names"],
                    "epoch": np.int64(ckpt["epoch"]),
                    "pooling": np.array(poolings[name]),
                    "cache_key": np.array(keys[name]),
                    **({"part": probe["part"]} if "part" in probe else {}),
                },
            )
            if keep_epochs == "all" or int(ckpt["epoch"]) in set(keep_epochs):
                cache.keep(keys[name], out)
            log(
                f"epoch {ckpt['epoch']} {name}: {len(names)} layers, {len(probe['labels'])} "
                f"images, {time.perf_counter() - start:.2f} s -> {out}"
            )
