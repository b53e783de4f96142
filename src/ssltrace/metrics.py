"""Per-run drivers: apply the array-level analyses to every epoch and layer of one run.

Each driver reads a run's activation files, writes one tidy table (see `ssltrace.tables`) and
the matrices it computed (stacked [epoch, layer, ...] with their axis labels), so figures never
recompute metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ssltrace import io, tables


def _run_rows(method: str, seed: int, probe: str):
    def row(epoch: int, layer: str, metric: str, value: float) -> dict:
        return {
            "method": method,
            "seed": seed,
            "epoch": int(epoch),
            "layer": layer,
            "probe": probe,
            "metric": metric,
            "value": float(value),
        }

    return row


def class_coarse(labels: np.ndarray, coarse: np.ndarray, n_classes: int) -> np.ndarray:
    """Coarse class of each class, checking that every class has exactly one."""
    out = np.empty(n_classes, dtype=np.int64)
    for c in range(n_classes):
        values = np.unique(coarse[labels == c])
        if len(values) != 1:
            raise ValueError(f"class {c} maps to coarse classes {values.tolist()}, expected one")
        out[c] = values[0]
    return out


def fewshot_run(
    activation_files: Sequence[Path],
    table_out: Path,
    matrices_out: Path,
    method: str,
    seed: int,
    probe: str,
    shots: int,
    trials: int,
    distance: str,
    trial_seed: int,
    max_per_class: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """Pairwise m-shot prototype error matrices (seed 000 §2.4) for every epoch and layer."""
    from ssltrace.analysis.fewshot import mean_offdiagonal, pairwise_prototype_errors

    row = _run_rows(method, seed, probe)
    rows, stacks, epochs = [], [], []
    for path in activation_files:
        acts = io.load_npz(path)
        layers = [str(x) for x in acts["layers"]]
        epoch = int(acts["epoch"])
        per_layer = []
        for layer in layers:
            errors = pairwise_prototype_errors(
                acts[layer],
                acts["labels"],
                shots=shots,
                trials=trials,
                distance=distance,
                max_per_class=max_per_class,
                seed=trial_seed,
                device=device,
            )
            per_layer.append(errors)
            rows.append(row(epoch, layer, "fewshot_error", mean_offdiagonal(errors)))
        stacks.append(np.stack(per_layer))
        epochs.append(epoch)
        log(
            f"fewshot epoch {epoch}: "
            + ", ".join(f"{r['layer']}={r['value']:.3f}" for r in rows[-len(layers) :])
        )
    n_classes = stacks[0].shape[-1]
    io.save_npz(
        matrices_out,
        {
            "errors": np.stack(stacks),
            "epochs": np.array(epochs, dtype=np.int64),
            "layers": np.array(layers),
            "class_names": acts["class_names"],
            "class_coarse": class_coarse(acts["labels"], acts["coarse"], n_classes),
            "coarse_names": acts["coarse_names"],
        },
    )
    io.save_table(table_out, tables.frame(rows))


def clustering_run(
    fewshot_matrices: Path,
    table_out: Path,
    clusters_out: Path,
    method: str,
    seed: int,
    probe: str,
    linkage: str,
    permutations: int,
    perm_seed: int,
    log: Callable[[str], None] = print,
) -> None:
    """Hierarchical clustering of each error matrix vs coarse classes (seed 000 §2.6, Eq. 10).

    Per epoch and layer: cluster labels, MI (bits), NMI, permutation p, and the correspondence
    matrix (clusters x coarse classes, rows matched by maximum-weight assignment, Fig. 7).
    Rows with metric `best_layer_mi_bits` mark, per epoch, the layer with the highest MI.
    """
    from ssltrace.analysis import clustering as cl

    data = io.load_npz(fewshot_matrices)
    coarse = data["class_coarse"]
    n_clusters = len(np.unique(coarse))
    row = _run_rows(method, seed, probe)
    n_epochs, n_layers = data["errors"].shape[:2]
    assignments = np.zeros((n_epochs, n_layers, len(coarse)), dtype=np.int64)
    correspondence = np.zeros((n_epochs, n_layers, n_clusters, n_clusters), dtype=np.int64)
    linkages = np.zeros((n_epochs, n_layers, len(coarse) - 1, 4))
    rows = []
    for e, epoch in enumerate(data["epochs"]):
        mi = {}
        for li, layer in enumerate(data["layers"]):
            dissim = cl.error_dissimilarity(data["errors"][e, li])
            linkages[e, li] = cl.linkage_matrix(dissim, linkage)
            labels = cl.cut_linkage(linkages[e, li], n_clusters)
            assignments[e, li] = labels
            correspondence[e, li] = cl.correspondence_matrix(labels, coarse)[0]
            mi[layer] = cl.mutual_information_bits(labels, coarse)
            rows += [
                row(epoch, layer, "mi_bits", mi[layer]),
                row(epoch, layer, "nmi", cl.normalised_mutual_information(labels, coarse)),
            ]
            if permutations:
                p = cl.mi_permutation_pvalue(labels, coarse, permutations, seed=perm_seed)
                rows.append(row(epoch, layer, "mi_pvalue", p))
        best = max(mi, key=mi.get)
        rows.append(row(epoch, best, "best_layer_mi_bits", mi[best]))
        log(f"clustering epoch {int(epoch)}: best layer {best} ({mi[best]:.3f} bits)")
    io.save_npz(
        clusters_out,
        {
            "clusters": assignments,
            "correspondence": correspondence,
            "linkage": linkages,
            "epochs": data["epochs"],
            "layers": data["layers"],
            "class_names": data["class_names"],
            "class_coarse": coarse,
            "coarse_names": data["coarse_names"],
        },
    )
    io.save_table(table_out, tables.frame(rows))


def human_run(
    activation_files: Sequence[Path],
    probe_path: Path,
    table_out: Path,
    matrices_out: Path,
    method: str,
    seed: int,
    shots: int,
    trials: int,
    distance: str,
    trial_seed: int,
    permutations: int,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """Few-shot confusion vs CIFAR-10H human confusion per epoch and layer (seed 000 §2.5).

    The model matrix is the row-normalised confusion of nearest-prototype classification over
    all classes at once; the human matrix averages each image's normalised annotator counts
    per true class. Both are compared by Spearman's rho off the diagonal (primary, with a
    permutation p) and over the full matrix.
    """
    from ssltrace.analysis import human as hu
    from ssltrace.analysis.fewshot import prototype_confusion

    probe = io.load_npz(probe_path)
    human = hu.human_confusion(probe["human_counts"], probe["labels"])
    row = _run_rows(method, seed, "human")
    rows, stacks, epochs = [], [], []
    for path in activation_files:
        acts = io.load_npz(path)
        if not np.array_equal(acts["labels"], probe["labels"]):
            raise ValueError(f"{path} was not extracted from probe set {probe_path}")
        layers, epoch = [str(x) for x in acts["layers"]], int(acts["epoch"])
        per_layer = []
        for layer in layers:
            model = prototype_confusion(
                acts[layer],
                acts["labels"],
                shots=shots,
                trials=trials,
                distance=distance,
                seed=trial_seed,
                device=device,
            )
            per_layer.append(model)
            rows += [
                row(epoch, layer, "human_spearman_offdiag", hu.compare_confusions(model, human)),
                row(
                    epoch, layer, "human_spearman_full", hu.compare_confusions(model, human, False)
                ),
                row(epoch, layer, "fewshot_accuracy", np.trace(model) / len(model)),
            ]
            if permutations:
                p = hu.permutation_pvalue(model, human, True, permutations, seed=trial_seed)
                rows.append(row(epoch, layer, "human_spearman_pvalue", p))
        stacks.append(np.stack(per_layer))
        epochs.append(epoch)
        log(f"human epoch {epoch}: done {len(layers)} layers")
    io.save_npz(
        matrices_out,
        {
            "confusion": np.stack(stacks),
            "human": human,
            "epochs": np.array(epochs, dtype=np.int64),
            "layers": np.array(layers),
            "class_names": probe["class_names"],
        },
    )
    io.save_table(table_out, tables.frame(rows))


def trajectory_run(
    activation_files: Sequence[Path],
    table_out: Path,
    rdms_out: Path,
    method: str,
    seed: int,
    rdm_metric: str,
    compare: Sequence[str],
    log: Callable[[str], None] = print,
) -> None:
    """RDMs of the RDM probe set along training (seed 001 Figs. 1-2).

    Rows: `rdm_stability_<compare>` at epoch e compares the RDMs of the previous analysed epoch
    and e; `within_dissimilarity/<group>` and `between_dissimilarity/<group>` per epoch.
    """
    from ssltrace.analysis.rdm import compare as compare_rdms
    from ssltrace.analysis.rdm import compute_rdm
    from ssltrace.analysis.trajectory import category_dissimilarity

    row = _run_rows(method, seed, "rdm")
    rows, stacks, epochs = [], [], []
    for path in activation_files:
        acts = io.load_npz(path)
        layers, epoch = [str(x) for x in acts["layers"]], int(acts["epoch"])
        groups = [str(g) for g in acts["coarse_names"]]
        per_layer = np.stack([compute_rdm(acts[layer], rdm_metric) for layer in layers])
        for li, layer in enumerate(layers):
            parts = category_dissimilarity(per_layer[li], acts["coarse"], groups)
            for group, (within, between) in parts.items():
                rows.append(row(epoch, layer, f"within_dissimilarity/{group}", within))
                rows.append(row(epoch, layer, f"between_dissimilarity/{group}", between))
            if stacks:
                for how in compare:
                    value = compare_rdms(stacks[-1][li], per_layer[li], how)
                    rows.append(row(epoch, layer, f"rdm_stability_{how}", value))
        stacks.append(per_layer)
        epochs.append(epoch)
        log(f"trajectory epoch {epoch}: {len(layers)} RDMs of {per_layer.shape[-1]} images")
    io.save_npz(
        rdms_out,
        {
            "rdms": np.stack(stacks).astype(np.float32),
            "epochs": np.array(epochs, dtype=np.int64),
            "layers": np.array(layers),
            "group_of_image": acts["coarse"],
            "groups": acts["coarse_names"],
        },
    )
    io.save_table(table_out, tables.frame(rows))


def geometry_run(
    known_files: Sequence[Path],
    sample_files: Sequence[Path],
    table_out: Path,
    method: str,
    seed: int,
    levels: Sequence[str],
    probes: Sequence[str],
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """Clustering geometry (seed 004) per epoch, layer and label level (probe column = level).

    Fine and coarse levels use the known-class probe set's train/test parts; the sample level
    uses N source images x K training and K' test augmentations.
    """
    from ssltrace.analysis.geometry import geometry_metrics

    rows = []
    for known_path, sample_path in zip(known_files, sample_files, strict=True):
        sources = {"fine": known_path, "coarse": known_path, "sample": sample_path}
        loaded = {}
        for level in levels:
            path = sources[level]
            acts = loaded.setdefault(path, io.load_npz(path))
            epoch = int(acts["epoch"])
            row = _run_rows(method, seed, level)
            labels = acts["coarse"] if level == "coarse" else acts["labels"]
            train, test = acts["part"] == 0, acts["part"] == 1
            for layer in (str(x) for x in acts["layers"]):
                x = acts[layer]
                found = geometry_metrics(
                    x[train], labels[train], x[test], labels[test], probes=probes, device=device
                )
                rows += [row(epoch, layer, metric, value) for metric, value in found.items()]
        log(f"geometry epoch {epoch}: levels {', '.join(levels)}")
    io.save_table(table_out, tables.frame(rows))
