"""Random-target label sets (seed paper 004 §5): a target network's class predictions per epoch.

A target network (a supervised run `target_<network>` of the study) is trained on the
pretraining set; its class predictions on the known-class probe images at each of its epochs
are target sets of decreasing randomness: at epoch 0 the network is random ("deterministic yet
seemingly arbitrary labels"), at the end of training its predictions align with the classes.
Randomness is normalised as in the paper: r(t) = 1 − t / T for epoch t of T (1 = init,
0 = end of training).

`write_target_labels` writes one file, `probes/random_targets.npz`, for all target networks:

| key | dtype, shape | meaning |
|---|---|---|
| networks | str [K] | target network names |
| predictions_{network} | int64 [E, n] | argmax class of each probe image at each epoch |
| epochs_{network} | int64 [E] | target-network epochs |
| randomness_{network} | float64 [E] | 1 − epoch / last epoch of the run |
| labels, coarse, part | int64 [n] | the probe set's own arrays (rows align with activations) |
| n_classes | int64 | classes the target networks predict |

Each checkpoint's predictions are cached under a key of checkpoint and probe bytes, so a
rerun after extending a target run predicts only the new epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ssltrace import io, store
from ssltrace.device import resolve_device
from ssltrace.network import load_network
from ssltrace.store import EpochCache


@torch.no_grad()
def class_predictions(net, images: np.ndarray, batch_size: int, augment: dict | None) -> np.ndarray:
    """Argmax class of each image (unaugmented, normalised as in training) [n] int64."""
    from ssltrace.augment import Augmenter

    device = next(net.parameters()).device
    to_input = Augmenter(augment, device, colour_space=net.colour_space).plain
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        logits = net.probe_forward(to_input(batch.to(device)))
        out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.int64)


def randomness(epochs: Sequence[int], last_epoch: int) -> np.ndarray:
    """The paper's normalised randomness 1 − t / T (1 = initialisation, 0 = end of training)."""
    if last_epoch < 1:
        raise ValueError(f"a target network must train at least one epoch, got {last_epoch}")
    return 1.0 - np.asarray(epochs, dtype=np.float64) / float(last_epoch)


def write_target_labels(
    checkpoints: Mapping[str, Sequence[Path]],
    last_epochs: Mapping[str, int],
    probe_path: Path,
    out: Path,
    batch_size: int = 1000,
    device: str = "auto",
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Predictions of every target network (name -> its checkpoints, in epoch order) on the
    probe images; `last_epochs[name]` is the run's final epoch (randomness 0)."""
    probe = io.load_npz(probe_path)
    probe_digest = store.file_digest(probe_path)
    cache = EpochCache(cache_dir, "target_labels", log=log)
    dev = resolve_device(device)
    arrays: dict[str, np.ndarray] = {"networks": np.array(list(checkpoints))}
    n_classes = set()
    for name, paths in checkpoints.items():
        preds, epochs = [], []
        for path in paths:
            epoch, found, classes = _predict(path, probe, probe_digest, batch_size, dev, cache)
            preds.append(found)
            epochs.append(epoch)
            n_classes.add(classes)
            log(f"{name} epoch {epoch}: {np.unique(found).size} classes predicted")
        arrays[f"predictions_{name}"] = np.stack(preds)
        arrays[f"epochs_{name}"] = np.array(epochs, dtype=np.int64)
        arrays[f"randomness_{name}"] = randomness(epochs, last_epochs[name])
    if len(n_classes) > 1:
        raise ValueError(f"target networks predict different numbers of classes: {n_classes}")
    arrays.update({k: probe[k] for k in ("labels", "coarse", "part") if k in probe})
    arrays["n_classes"] = np.int64(n_classes.pop())
    io.save_npz(out, arrays)


def _predict(path, probe, probe_digest, batch_size, dev, cache):
    path = Path(path)
    if not path.exists():
        raise io.ArtifactReadError(
            f"checkpoint {path} is missing", path, advice=False
        ).remove_folder(path.parent)
    key = store.make_key("target_labels", store.file_digest(path), probe_digest)
    hit = cache.load_result(key)
    if hit is not None:
        _, found = hit
        return int(found["epoch"]), found["predictions"], int(found["n_classes"])
    try:
        net, ckpt = load_network(path, dev)
    except io.ArtifactReadError as error:
        if error.removed:  # damaged, not refused: have its training job restore it
            raise error.remove_folder(path.parent) from error.__cause__
        raise
    found = class_predictions(net, probe["images"], batch_size, ckpt.get("augment"))
    epoch, classes = int(ckpt["epoch"]), int(ckpt["n_classes"])
    cache.save_result(
        key,
        [],
        {"epoch": np.int64(epoch), "predictions": found, "n_classes": np.int64(classes)},
    )
    return epoch, found, classes
