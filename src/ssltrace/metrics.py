"""Per-run drivers: apply the array-level analyses to every epoch and layer of one run.

Each driver reads a run's activation files, writes one tidy table (see `ssltrace.tables`) and
the matrices it computed (stacked [epoch, layer, ...] with their axis labels), so figures never
recompute metrics. Per-epoch results are cached by content (`ssltrace.store`): when a study is
extended, only epochs whose activations or settings changed are computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ssltrace import io, tables
from ssltrace.store import EpochCache, make_key

Log = Callable[[str], None]
# (rows of (layer, metric, value), arrays of this epoch) for one activations file
EpochResult = tuple[list[tuple[str, str, float]], dict[str, np.ndarray]]


def activation_key(path: Path) -> str:
    """The content key an extraction stored in its file (or the file's digest if absent)."""
    with np.load(path, allow_pickle=False) as data:
        if "cache_key" in data.files:
            return str(data["cache_key"])
    from ssltrace.store import file_digest

    return file_digest(path)


def per_epoch(
    files: Sequence[Path],
    stage: str,
    settings: dict,
    compute: Callable[[dict], EpochResult],
    cache_dir: Path | None,
    log: Log,
) -> Iterator[tuple[int, EpochResult]]:
    """(epoch, result) for each activations file, computing only what the cache lacks."""
    cache = EpochCache(cache_dir, stage)
    for path in files:
        key = make_key(stage, activation_key(path), settings)
        hit = cache.load_result(key)
        if hit is not None:
            rows, arrays = hit
            rows = [tuple(r) for r in rows]
            log(f"{stage} epoch {int(arrays['epoch'])}: cached")
        else:
            acts = io.load_npz(path)
            rows, arrays = compute(acts)
            arrays["epoch"] = np.int64(acts["epoch"])
            cache.save_result(key, [list(r) for r in rows], arrays)
            log(f"{stage} epoch {int(arrays['epoch'])}: computed {len(rows)} values")
        yield int(arrays["epoch"]), (rows, arrays)


def tidy(method: str, seed: int, probe: str, epoch: int, rows) -> list[dict]:
    return [
        {
            "method": method,
            "seed": int(seed),
            "epoch": int(epoch),
            "layer": layer,
            "probe": probe,
            "metric": metric,
            "value": float(value),
        }
        for layer, metric, value in rows
    ]


def layer_names(acts: dict) -> list[str]:
    return [str(x) for x in acts["layers"]]


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
    settings: dict,
    cache_dir: Path | None = None,
    log: Log = print,
) -> None:
    """Pairwise m-shot prototype error matrices (seed 000 §2.4) for every epoch and layer.

    settings: shots, trials, distance, seed, max_per_class (None = all), device.
    """
    from ssltrace.analysis.fewshot import mean_offdiagonal, pairwise_prototype_errors

    def compute(acts: dict) -> EpochResult:
        rows, mats = [], []
        for layer in layer_names(acts):
            errors = pairwise_prototype_errors(
                acts[layer],
                acts["labels"],
                max_per_class=settings.get("max_per_class"),
                **_fewshot_args(settings),
            )
            mats.append(errors)
            rows.append((layer, "fewshot_error", mean_offdiagonal(errors)))
        n_classes = mats[0].shape[0]
        return rows, {
            "errors": np.stack(mats),
            "layers": acts["layers"],
            "class_names": acts["class_names"],
            "class_coarse": class_coarse(acts["labels"], acts["coarse"], n_classes),
            "coarse_names": acts["coarse_names"],
        }

    results = list(per_epoch(activation_files, "fewshot", settings, compute, cache_dir, log))
    _save(results, "errors", table_out, matrices_out, (method, seed, probe))


def human_run(
    activation_files: Sequence[Path],
    probe_path: Path,
    table_out: Path,
    matrices_out: Path,
    method: str,
    seed: int,
    settings: dict,
    cache_dir: Path | None = None,
    log: Log = print,
) -> None:
    """Few-shot confusion vs CIFAR-10H human confusion per epoch and layer (seed 000 §2.5).

    The model matrix is the row-normalised confusion of nearest-prototype classification over
    all classes at once; the human matrix averages each image's normalised annotator counts
    per true class. Both are compared by Spearman's rho off the diagonal (primary, with a
    permutation p) and over the full matrix. settings: shots, trials, distance, seed,
    permutations, device.
    """
    from ssltrace.analysis import human as hu
    from ssltrace.analysis.fewshot import prototype_confusion

    probe = io.load_npz(probe_path)
    human = hu.human_confusion(probe["human_counts"], probe["labels"])

    def compute(acts: dict) -> EpochResult:
        if not np.array_equal(acts["labels"], probe["labels"]):
            raise ValueError(f"activations were not extracted from probe set {probe_path}")
        rows, mats = [], []
        for layer in layer_names(acts):
            model = prototype_confusion(acts[layer], acts["labels"], **_fewshot_args(settings))
            mats.append(model)
            rows += [
                (layer, "human_spearman_offdiag", hu.compare_confusions(model, human)),
                (layer, "human_spearman_full", hu.compare_confusions(model, human, False)),
                (layer, "fewshot_accuracy", np.trace(model) / len(model)),
            ]
            if settings["permutations"]:
                p = hu.permutation_pvalue(
                    model, human, True, settings["permutations"], seed=settings["seed"]
                )
                rows.append((layer, "human_spearman_pvalue", p))
        return rows, {"confusion": np.stack(mats), "layers": acts["layers"]}

    key = {**settings, "human": human.tolist()}
    results = list(per_epoch(activation_files, "human", key, compute, cache_dir, log))
    extra = {"human": human, "class_names": probe["class_names"]}
    _save(results, "confusion", table_out, matrices_out, (method, seed, "human"), extra)


def clustering_run(
    fewshot_matrices: Path,
    table_out: Path,
    clusters_out: Path,
    method: str,
    seed: int,
    probe: str,
    settings: dict,
    log: Log = print,
) -> None:
    """Hierarchical clustering of each error matrix vs coarse classes (seed 000 §2.6, Eq. 10).

    Per epoch and layer: cluster labels, MI (bits), NMI, permutation p, and the correspondence
    matrix (clusters x coarse classes, rows matched by maximum-weight assignment, Fig. 7).
    Rows with metric `best_layer_mi_bits` mark, per epoch, the layer with the highest MI.
    settings: linkage, permutations, seed. Cheap, so not cached.
    """
    from ssltrace.analysis import clustering as cl

    data = io.load_npz(fewshot_matrices)
    coarse = data["class_coarse"]
    n_clusters = len(np.unique(coarse))
    n_epochs, n_layers = data["errors"].shape[:2]
    assignments = np.zeros((n_epochs, n_layers, len(coarse)), dtype=np.int64)
    correspondence = np.zeros((n_epochs, n_layers, n_clusters, n_clusters), dtype=np.int64)
    linkages = np.zeros((n_epochs, n_layers, len(coarse) - 1, 4))
    table = []
    for e, epoch in enumerate(data["epochs"]):
        rows, mi = [], {}
        for li, layer in enumerate(str(x) for x in data["layers"]):
            dissim = cl.error_dissimilarity(data["errors"][e, li])
            linkages[e, li] = cl.linkage_matrix(dissim, settings["linkage"])
            labels = cl.cut_linkage(linkages[e, li], n_clusters)
            assignments[e, li] = labels
            correspondence[e, li] = cl.correspondence_matrix(labels, coarse)[0]
            mi[layer] = cl.mutual_information_bits(labels, coarse)
            rows += [
                (layer, "mi_bits", mi[layer]),
                (layer, "nmi", cl.normalised_mutual_information(labels, coarse)),
            ]
            if settings["permutations"]:
                p = cl.mi_permutation_pvalue(
                    labels, coarse, settings["permutations"], seed=settings["seed"]
                )
                rows.append((layer, "mi_pvalue", p))
        best = max(mi, key=mi.get)
        rows.append((best, "best_layer_mi_bits", mi[best]))
        table += tidy(method, seed, probe, epoch, rows)
        log(f"clustering epoch {int(epoch)}: best layer {best} ({mi[best]:.3f} bits)")
    io.save_npz(
        clusters_out,
        {
            "clusters": assignments,
            "correspondence": correspondence,
            "linkage": linkages,
            **{k: data[k] for k in ("epochs", "layers", "class_names", "class_coarse")},
            "coarse_names": data["coarse_names"],
        },
    )
    io.save_table(table_out, tables.frame(table))


def trajectory_run(
    activation_files: Sequence[Path],
    table_out: Path,
    rdms_out: Path,
    method: str,
    seed: int,
    settings: dict,
    cache_dir: Path | None = None,
    log: Log = print,
) -> None:
    """RDMs of the RDM probe set along training (seed 001 Figs. 1-2).

    Rows: `rdm_stability_<compare>` at epoch e compares the RDMs of the previous analysed epoch
    and e; `within_dissimilarity/<group>` and `between_dissimilarity/<group>` per epoch.
    settings: rdm_metric, compare (list of rdm.compare methods).
    """
    from ssltrace.analysis.rdm import compare as compare_rdms
    from ssltrace.analysis.rdm import compute_rdm
    from ssltrace.analysis.trajectory import category_dissimilarity

    def compute(acts: dict) -> EpochResult:
        groups = [str(g) for g in acts["coarse_names"]]
        rdms = np.stack(
            [compute_rdm(acts[layer], settings["rdm_metric"]) for layer in layer_names(acts)]
        )
        rows = []
        for layer, rdm in zip(layer_names(acts), rdms, strict=True):
            parts = category_dissimilarity(rdm, acts["coarse"], groups)
            for group, (within, between) in parts.items():
                rows.append((layer, f"within_dissimilarity/{group}", within))
                rows.append((layer, f"between_dissimilarity/{group}", between))
        return rows, {
            "rdms": rdms,
            "layers": acts["layers"],
            "group_of_image": acts["coarse"],
            "groups": acts["coarse_names"],
        }

    key = {"rdm_metric": settings["rdm_metric"]}  # comparisons are redone, never cached
    results = list(per_epoch(activation_files, "trajectory", key, compute, cache_dir, log))
    table = []
    for i, (epoch, (rows, arrays)) in enumerate(results):
        rows = list(rows)
        if i > 0:
            previous = results[i - 1][1][1]["rdms"]
            for li, layer in enumerate(str(x) for x in arrays["layers"]):
                for how in settings["compare"]:
                    value = compare_rdms(previous[li], arrays["rdms"][li], how)
                    rows.append((layer, f"rdm_stability_{how}", value))
        table += tidy(method, seed, "rdm", epoch, rows)
    io.save_table(table_out, tables.frame(table))
    stacked = _stack(results, "rdms")
    stacked["rdms"] = stacked["rdms"].astype(np.float32)
    io.save_npz(rdms_out, stacked)


def geometry_run(
    known_files: Sequence[Path],
    sample_files: Sequence[Path],
    table_out: Path,
    method: str,
    seed: int,
    settings: dict,
    cache_dir: Path | None = None,
    log: Log = print,
) -> None:
    """Clustering geometry (seed 004) per epoch, layer and label level (probe column = level).

    Fine and coarse levels use the known-class probe set's train/test parts; the sample level
    uses N source images x K training and K' test augmentations. settings: levels, probes.
    """
    from ssltrace.analysis.geometry import geometry_metrics

    def measure(levels: Sequence[str]) -> Callable[[dict], EpochResult]:
        def compute(acts: dict) -> EpochResult:
            rows = []
            train, test = acts["part"] == 0, acts["part"] == 1
            for level in levels:
                labels = acts["coarse"] if level == "coarse" else acts["labels"]
                for layer in layer_names(acts):
                    x = acts[layer]
                    found = geometry_metrics(
                        x[train],
                        labels[train],
                        x[test],
                        labels[test],
                        probes=settings["probes"],
                        device=settings.get("device", "auto"),
                    )
                    rows += [(f"{level}|{layer}", k, v) for k, v in found.items()]
            return rows, {}

        return compute

    known_levels = [lv for lv in settings["levels"] if lv in ("fine", "coarse")]
    table = []
    for files, levels in ((known_files, known_levels), (sample_files, ["sample"])):
        if not levels or not set(levels) & set(settings["levels"]):
            continue
        stage_settings = {"levels": levels, "probes": settings["probes"]}
        for epoch, (rows, _) in per_epoch(
            files, "geometry", stage_settings, measure(levels), cache_dir, log
        ):
            for level_layer, metric, value in rows:
                level, layer = level_layer.split("|", 1)
                table += tidy(method, seed, level, epoch, [(layer, metric, value)])
    io.save_table(table_out, tables.frame(table))


def _fewshot_args(settings: dict) -> dict:
    """Shot-draw and distance arguments of the `analysis.fewshot` functions: both few-shot
    drivers read them from their settings alike."""
    return {
        "shots": settings["shots"],
        "trials": settings["trials"],
        "distance": settings["distance"],
        "seed": settings["seed"],
        "device": settings.get("device", "auto"),
    }


def _save(
    results, name: str, table_out: Path, matrices_out: Path, run: tuple, extra: dict | None = None
) -> None:
    """The tidy table of per-epoch results and their array `name` stacked over epochs (plus
    `extra` arrays); run = (method, seed, probe) of the table's rows."""
    table = []
    for epoch, (rows, _) in results:
        table += tidy(*run, epoch, rows)
    io.save_table(table_out, tables.frame(table))
    io.save_npz(matrices_out, {**_stack(results, name), **(extra or {})})


def _stack(results, name: str) -> dict[str, np.ndarray]:
    """Stack one per-epoch array over epochs; keep the epoch-invariant arrays once."""
    first = results[0][1][1]
    out = {key: value for key, value in first.items() if key not in (name, "epoch")}
    out[name] = np.stack([arrays[name] for _, (_, arrays) in results])
    out["epochs"] = np.array([epoch for epoch, _ in results], dtype=np.int64)
    return out
