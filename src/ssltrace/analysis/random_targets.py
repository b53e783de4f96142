"""Semantic versus random targets (seed paper 004 §5, Figs. 4, 11 bottom, 12; App. A.2-A.3, B.5).

The target sets are the class predictions of target networks at each of their epochs on the
known-class probe images (`ssltrace.targets`, `probes/random_targets.npz`), with the paper's
normalised randomness 1 − t / T (1 = the random initialisation, 0 = end of training). For every
analysed epoch and layer of a studied run, and every target set:

- linear test accuracy: a linear probe (`random_targets.classifier`, default the paper's
  LinearSVC) trained on the probe's training part with the targets as labels, tested on its
  test part (Fig. 4 left, middle; Fig. 12);
- the clustering measures of `analysis.geometry` with the targets as classes: NCC test
  accuracy, CDNV, within-class variance and mean squared distance between class means.

The ratios semantic / random of the four clustering measures (Fig. 4 right) compare the
"non-random" targets (`random_targets.semantic`: `final` = the target network's predictions
at the end of its training, randomness 0, as the paper; `labels` = the true fine classes)
with the random ones (the predictions at initialisation, randomness 1), taken as
value(semantic) / value(random) for every measure.

Degenerate target sets are scored as any classifier would be: a random network may predict
one class for every image (the constant classifier is then the only one: its accuracy is the
share of test images of that class; CDNV and the class-distance measures are undefined, NaN),
and test images whose target class never occurs among the training images count as errors.

Rows: probe column `{network}:{target epoch}` for the per-target-set measures (`randomness`,
`linear_<classifier>`, `ncc_test`, `cdnv`, `within_var`, `between_dist`), `{network}` for the
ratios (`ratio_<measure>`). Matrix file `scores`: `accuracy` [epoch, layer, network, target],
`ratios` [epoch, layer, network, measure], with `randomness` and `target_epochs` [network,
target] (NaN / −1 where a network has fewer target sets), `networks`, `layers`, `measures`.
"""

from __future__ import annotations

import numpy as np

from ssltrace import io, store
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import (
    Activations,
    PerEpochAnalysis,
    Result,
    TargetLabels,
    layer_names,
    per_epoch,
)
from ssltrace.analysis.compression import chosen_layers
from ssltrace.analysis.geometry import (
    cdnv,
    mean_class_distance,
    ncc_accuracy,
    within_class_variance,
)
from ssltrace.analysis.probes import check_features, check_labels, linear_probe

MEASURES = ("ncc_test", "cdnv", "within_var", "between_dist")
# Keys of `random_targets` the read-out depends on (the others choose the target sets).
READOUT_KEYS = ("classifier", "backend", "max_iter", "semantic", "layers")


def target_accuracy(
    train_x, train_y, test_x, test_y, kind="svm", device="auto", **probe_options
) -> float:
    """Linear test accuracy on a target set, over all test images (see module docstring).
    `probe_options` go to `probes.linear_probe` (backend, max_iter, ...)."""
    train_y, test_y = _labels(train_x, train_y, test_x, test_y)
    classes = np.unique(train_y)
    seen = np.isin(test_y, classes)
    if classes.size == 1:
        return float(np.mean(test_y == classes[0]))
    if not seen.any():
        return 0.0
    found = linear_probe(
        train_x, train_y, test_x[seen], test_y[seen], kind=kind, device=device, **probe_options
    )
    return found * float(seen.mean())


def clustering_measures(train_x, train_y, test_x, test_y, device="auto") -> dict[str, float]:
    """NCC test accuracy (unseen classes count as errors), and CDNV, within-class variance and
    mean squared distance between class means of the training part (NaN for one class)."""
    train_y, test_y = _labels(train_x, train_y, test_x, test_y)
    classes = np.unique(train_y)
    seen = np.isin(test_y, classes)
    if classes.size == 1:
        return {"ncc_test": float(np.mean(test_y == classes[0]))} | dict.fromkeys(
            MEASURES[1:], float("nan")
        )
    ncc = 0.0
    if seen.any():
        ncc = ncc_accuracy(train_x, train_y, test_x[seen], test_y[seen], device)[1]
    return {
        "ncc_test": ncc * float(seen.mean()),
        "cdnv": cdnv(train_x, train_y, device),
        "within_var": within_class_variance(train_x, train_y, device),
        "between_dist": mean_class_distance(train_x, train_y, device),
    }


def _labels(train_x, train_y, test_x, test_y) -> tuple[np.ndarray, np.ndarray]:
    train_x = check_features(train_x, "train_x")
    test_x = check_features(test_x, "test_x")
    return (
        check_labels(train_y, "train_y", train_x.shape[0]),
        check_labels(test_y, "test_y", test_x.shape[0]),
    )


def ratios(semantic: dict[str, float], random: dict[str, float]) -> dict[str, float]:
    """value(semantic) / value(random) per measure (NaN where the random one is 0 or NaN)."""
    out = {}
    for m in MEASURES:
        low = random[m]
        out[m] = semantic[m] / low if np.isfinite(low) and low != 0 else float("nan")
    return out


@ANALYSES.register("random_targets")
class RandomTargets(PerEpochAnalysis):
    """Linear read-out and clustering of target sets of decreasing randomness (seed 004 §5)."""

    name = "random_targets"
    summary = (
        "linear accuracy and clustering on random-target networks' predictions of decreasing "
        "randomness; semantic/random ratios (seed 004 §5, Fig. 4)"
    )
    inputs = {"known": Activations("known"), "targets": TargetLabels()}
    arrays = ("scores",)
    sections = ("random_targets",)
    resources = {"mem_mb": 16000, "runtime": 240, "gpu": 1}

    @classmethod
    def config_settings(cls, cfg):
        """What the read-out depends on: the other keys of the section choose the target sets,
        which reach this analysis through its input file (a change there reruns it anyway)."""
        section = cfg["random_targets"]
        return {k: section[k] for k in READOUT_KEYS}

    def cache_settings(self):
        return {**{k: self.settings[k] for k in READOUT_KEYS}, "targets": self.targets_digest}

    def prepare(self, job):
        path = job.inputs["targets"]
        found = io.load_npz(path)
        self.targets_digest = store.file_digest(path)
        self.networks = [str(n) for n in found["networks"]]
        self.sets = {
            net: (found[f"predictions_{net}"], found[f"epochs_{net}"], found[f"randomness_{net}"])
            for net in self.networks
        }
        self.probe_labels = found["labels"]

    def run(self, job):
        self.prepare(job)
        results = list(per_epoch(self, "known", job.epoch_files("known"), job))
        rows = [(r.epoch, *row) for r in results for row in r.rows]
        first = results[0].arrays
        arrays = {
            "accuracy": np.stack([r.arrays["accuracy"] for r in results]),
            "ratios": np.stack([r.arrays["ratios"] for r in results]),
            "epochs": np.array([r.epoch for r in results], dtype=np.int64),
            **{k: first[k] for k in ("layers", "networks", "measures")},
            **self._target_axes(),
        }
        return Result(rows, {"scores": arrays})

    def epoch(self, role, acts):
        layers = chosen_layers(layer_names(acts), self.settings.get("layers"), "random_targets")
        if acts[layers[0]].shape[0] != self.probe_labels.shape[0] or not np.array_equal(
            acts["labels"], self.probe_labels
        ):
            raise ValueError(
                "the random-target labels were made for another known probe set than these "
                "activations: rerun the target_labels rule"
            )
        width = max(len(s[1]) for s in self.sets.values())
        accuracy = np.full((len(layers), len(self.networks), width), np.nan)
        ratio = np.full((len(layers), len(self.networks), len(MEASURES)), np.nan)
        rows = []
        for li, layer in enumerate(layers):
            for ni, net in enumerate(self.networks):
                found, acc, rat = self._layer(acts, layer, net)
                rows += found
                accuracy[li, ni, : len(acc)] = acc
                ratio[li, ni] = rat
        arrays = {
            "accuracy": accuracy,
            "ratios": ratio,
            "layers": np.array(layers),
            "networks": np.array(self.networks),
            "measures": np.array(MEASURES),
        }
        return rows, arrays

    def _layer(self, acts, layer, net):
        x, train, test = acts[layer], acts["part"] == 0, acts["part"] == 1
        preds, epochs, randomness = self.sets[net]
        kind, device = self.settings["classifier"], self.settings.get("device", "auto")
        rows, accuracy, measures = [], [], []
        for t, r, y in zip(epochs, randomness, preds, strict=True):
            probe = f"{net}:{int(t)}"
            acc = target_accuracy(
                x[train], y[train], x[test], y[test], kind, device, **self._probe_options()
            )
            found = clustering_measures(x[train], y[train], x[test], y[test], device)
            rows += [(layer, probe, "randomness", float(r)), (layer, probe, f"linear_{kind}", acc)]
            rows += [(layer, probe, m, v) for m, v in found.items()]
            accuracy.append(acc)
            measures.append(found)
        random = measures[int(np.argmax(randomness))]
        if self.settings["semantic"] == "labels":
            labels = acts["labels"]
            semantic = clustering_measures(x[train], labels[train], x[test], labels[test], device)
        else:
            semantic = measures[int(np.argmin(randomness))]
        found = ratios(semantic, random)
        rows += [(layer, net, f"ratio_{m}", v) for m, v in found.items()]
        return rows, accuracy, [found[m] for m in MEASURES]

    def _probe_options(self) -> dict:
        return {k: self.settings[k] for k in ("backend", "max_iter") if k in self.settings}

    def _target_axes(self) -> dict[str, np.ndarray]:
        width = max(len(s[1]) for s in self.sets.values())
        randomness = np.full((len(self.networks), width), np.nan)
        epochs = np.full((len(self.networks), width), -1, dtype=np.int64)
        for ni, net in enumerate(self.networks):
            _, found_epochs, found_randomness = self.sets[net]
            randomness[ni, : len(found_epochs)] = found_randomness
            epochs[ni, : len(found_epochs)] = found_epochs
        return {"randomness": randomness, "target_epochs": epochs}
