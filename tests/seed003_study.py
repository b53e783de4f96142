"""Synthetic seed 003 tables and matrix files (neighbours, orientation) for the figure tests."""

from __future__ import annotations

import numpy as np

from ssltrace import io, tables


def write(root, methods, seeds, run_epochs, layers) -> dict[str, dict]:
    """{analysis: {"table": path, "ranked:METHOD:SEED": path, ...}} in the documented formats."""
    rng = np.random.default_rng(3)
    rows = {"neighbours": [], "orientation": [], "transfer": [], "predictivity": []}
    inputs = {"neighbours": {}, "orientation": {}, "transfer": {}, "predictivity": {}}
    ranks = np.unique(np.round(np.geomspace(1, 239, 40)).astype(np.int64))
    for method in methods:
        for seed in seeds:
            epochs = run_epochs(method)
            ranked = np.zeros((len(epochs), len(layers), ranks.size))
            for e, epoch in enumerate(epochs):
                for li, layer in enumerate(layers):
                    knn = min(1.0, 0.2 + 0.1 * epoch + 0.03 * li + rng.uniform(0, 0.03))
                    quality = 0.6 * knn
                    cv = max(0.05, 0.9 - 0.1 * epoch - 0.02 * li + rng.uniform(0, 0.03))
                    ranked[e, li] = 0.9 - (0.1 + 0.05 * epoch) * np.log(ranks) / np.log(239)
                    found = [
                        ("neighbours", "fine", "knn_accuracy", knn),
                        ("neighbours", "fine", "neighbour_quality", quality),
                        ("orientation", "gratings", "cv_median", cv),
                        ("orientation", "gratings", "cv_q25", cv - 0.1),
                        ("orientation", "gratings", "cv_q75", cv + 0.05),
                        ("orientation", "gratings", "responsive_units", 0.9),
                        ("transfer", "heldout", "position_r", knn - 0.1),
                        ("transfer", "heldout", "pose_r", knn - 0.3),
                    ]
                    for region, peak in (("simulated:V1-like", 1), ("simulated:IT-like", 4)):
                        # planted: each region peaks at one layer, rising with training
                        score = 0.3 + 0.1 * epoch - 0.05 * abs(li - peak) + rng.uniform(0, 0.02)
                        found += [("predictivity", region, "factorised_map_ceiled", score)]
                    if li == len(layers) - 2:  # the best layer's rows
                        found += [
                            ("transfer", "heldout", "position_r_best", knn - 0.1),
                            ("transfer", "heldout", "pose_r_best", knn - 0.3),
                            ("transfer", "heldout", "scale_r_best", knn - 0.2),
                        ]
                    for analysis, probe, metric, value in found:
                        rows[analysis].append(
                            dict(
                                method=method,
                                seed=seed,
                                epoch=epoch,
                                layer=layer,
                                probe=probe,
                                metric=metric,
                                value=value,
                            )
                        )
            path = root / "metrics" / "neighbours" / method / f"seed{seed}_ranked.npz"
            io.save_npz(
                path,
                {
                    "ranked": ranked,
                    "ranks": ranks,
                    "epochs": np.array(epochs),
                    "layers": np.array(layers),
                },
            )
            inputs["neighbours"][f"ranked:{method}:{seed}"] = path
    for name, found in rows.items():
        path = root / "tables" / f"{name}.tsv"
        io.save_table(path, tables.frame(found).sort_values(tables.COLUMNS[:-1], kind="stable"))
        inputs[name]["table"] = path
    return inputs


def write_units(root, methods, seeds, run_epochs) -> dict[str, dict]:
    """Per-run matrix files of the mds, filters and stimuli analyses."""
    rng = np.random.default_rng(4)
    inputs = {"mds": {}, "filters": {}, "stimuli": {}}
    coarse = np.repeat(np.arange(4), 10)
    for method in methods:
        for seed in seeds:
            epochs = run_epochs(method)
            shown = np.array(sorted({epochs[0], epochs[-1]}))
            arrays = {
                "mds": {
                    "embedding": rng.normal(size=(len(shown), 1, 40, 2)),
                    "epochs": shown,
                    "layers": np.array(["pool"]),
                    "labels": coarse * 2,
                    "coarse": coarse,
                    "coarse_names": np.array(["fish", "flowers", "insects", "trees"]),
                },
                "filters": {
                    "filters": rng.normal(size=(len(shown), 8, 3, 3, 3)),
                    "epochs": shown,
                    "layer": np.array("stem"),
                },
                "stimuli": {
                    "stimuli": rng.uniform(size=(1, 2, 3, 16, 16, 3)),
                    "epochs": shown[-1:],
                    "layers": np.array(["layer2", "layer4"]),
                    "channels": np.array([0, 1, 2]),
                },
            }
            for name, found in arrays.items():
                array = {"mds": "embedding", "filters": "filters", "stimuli": "stimuli"}[name]
                path = root / "metrics" / name / method / f"seed{seed}_{array}.npz"
                io.save_npz(path, found)
                inputs[name][f"{array}:{method}:{seed}"] = path
    return inputs
