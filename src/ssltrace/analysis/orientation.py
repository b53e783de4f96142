"""Orientation selectivity of units along training (seed paper 003, Extended Data Fig. 11).

Seed 003 tracks, over training, the orientation selectivity of the early layers' units,
measured by circular variance (CV; Ringach, Shapley & Hawken 2002): for a unit whose
non-negative response to gratings of orientation θ_j (evenly spaced over [0, π)) is R_j,

    CV = 1 − |Σ_j R_j exp(2iθ_j)| / Σ_j R_j,

0 for a unit that answers one orientation only, 1 for one that answers all alike.

Stimuli (`grating_probe`, the `gratings` probe set) are full-field static sinusoidal
gratings at `orientations` orientations × `frequencies` spatial frequencies (cycles per
image) × `phases` phases evenly spaced over one cycle: for a feed-forward network a drifting
grating is the sequence of its phases, so averaging the phases is averaging the drift. A unit
is one extracted feature of a layer (with the default `extract.pooling: mean`, a channel's
spatially averaged response, which — rectified — is proportional to the channel's response
amplitude to the grating). Its tuning curve is its response averaged over phases at its
preferred spatial frequency (the one of its peak response).

A unit's CV is defined only for a non-negative tuning curve with a positive sum; units with
a negative response (a layer without rectification) or none at all (dead units) are left
out, and the share of units kept is reported beside the CV quantiles.
"""

from __future__ import annotations

import numpy as np

from ssltrace import io
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile, layer_names


def grating_images(
    size: int, orientations: int, frequencies, phases: int, contrast: float = 1.0
) -> dict[str, np.ndarray]:
    """Float gratings contrast·cos(2π f (x cos θ + y sin θ) / size + φ) in [−1, 1].

    θ = jπ/orientations, f in cycles per image, φ = 2πp/phases; x, y pixel coordinates
    from the image centre. Image order: orientation-major, then frequency, then phase.
    Returns `images` float64 [n, size, size] and per image `orientation` (radians),
    `frequency` (cycles/image), `phase` (radians), `orientation_index`, `frequency_index`.
    """
    _check_grid(size, orientations, frequencies, phases, contrast)
    thetas = np.arange(orientations) * np.pi / orientations
    freqs = np.asarray(frequencies, dtype=np.float64)
    phis = np.arange(phases) * 2 * np.pi / phases
    grid = np.meshgrid(
        np.arange(orientations), np.arange(freqs.size), np.arange(phases), indexing="ij"
    )
    o, f, p = (a.ravel() for a in grid)
    coords = np.arange(size) - (size - 1) / 2
    y, x = np.meshgrid(coords, coords, indexing="ij")
    along = np.cos(thetas[o])[:, None, None] * x + np.sin(thetas[o])[:, None, None] * y
    arg = 2 * np.pi * freqs[f][:, None, None] * along / size + phis[p][:, None, None]
    return {
        "images": contrast * np.cos(arg),
        "orientation": thetas[o],
        "frequency": freqs[f],
        "phase": phis[p],
        "orientation_index": o.astype(np.int64),
        "frequency_index": f.astype(np.int64),
    }


def grating_probe(
    size: int, orientations: int, frequencies, phases: int, contrast: float = 1.0
) -> dict[str, np.ndarray]:
    """The `gratings` probe set: grey uint8 [n, size, size, 3] gratings around mid-grey
    (`grating_images` mapped from [−1, 1] to [0, 255]); labels = orientation index, coarse =
    frequency index, with the stimulus parameters of every image."""
    g = grating_images(size, orientations, frequencies, phases, contrast)
    grey = np.clip(np.round(127.5 + 127.5 * g["images"]), 0, 255).astype(np.uint8)
    degrees = np.arange(orientations) * 180.0 / orientations
    return {
        "images": np.repeat(grey[..., None], 3, axis=-1),
        "labels": g["orientation_index"],
        "coarse": g["frequency_index"],
        "class_names": np.array([f"{d:g} deg" for d in degrees]),
        "coarse_names": np.array([f"{f:g} cycles/image" for f in frequencies]),
        "source_index": np.arange(g["phase"].size, dtype=np.int64),
        "orientation": g["orientation"],
        "frequency": g["frequency"],
        "phase": g["phase"],
    }


def _check_grid(size, orientations, frequencies, phases, contrast) -> None:
    for name, value, low in (
        ("size", size, 2),
        ("orientations", orientations, 2),
        ("phases", phases, 1),
    ):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    freqs = np.asarray(frequencies, dtype=np.float64)
    if freqs.ndim != 1 or freqs.size == 0 or not (freqs > 0).all():
        raise ValueError(
            f"frequencies must be a non-empty list of positive numbers, got {frequencies!r}"
        )
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast!r}")


def circular_variance(tuning: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """CV of each column of `tuning` [orientations, units] at orientations `angles`
    (radians over [0, π)); NaN for a unit with a negative response or a zero sum."""
    r = np.asarray(tuning, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    if r.ndim != 2 or angles.shape != (r.shape[0],):
        raise ValueError(
            f"tuning must be [orientations, units] with one angle per row, got {r.shape} "
            f"and {angles.shape}"
        )
    total = r.sum(axis=0)
    resultant = np.abs(np.exp(2j * angles) @ r)
    valid = (r >= 0).all(axis=0) & (total > 0)
    cv = np.full(r.shape[1], np.nan)
    cv[valid] = 1.0 - resultant[valid] / total[valid]
    return cv


def tuning_curves(
    features: np.ndarray, orientation_index: np.ndarray, frequency_index: np.ndarray
) -> np.ndarray:
    """Mean response [orientations, frequencies, units] over the images (phases) of each
    orientation × frequency cell; every cell must hold an image."""
    x = np.asarray(features, dtype=np.float64)
    o, f = np.asarray(orientation_index), np.asarray(frequency_index)
    if x.ndim != 2 or o.shape != (x.shape[0],) or f.shape != (x.shape[0],):
        raise ValueError(
            "features must be [images, units] with one orientation and frequency per image"
        )
    shape = (int(o.max()) + 1, int(f.max()) + 1)
    cell = np.ravel_multi_index((o, f), shape)
    counts = np.bincount(cell, minlength=shape[0] * shape[1])
    if (counts == 0).any():
        raise ValueError("every orientation x frequency cell needs at least one image")
    sums = np.zeros((shape[0] * shape[1], x.shape[1]))
    np.add.at(sums, cell, x)
    return (sums / counts[:, None]).reshape(*shape, x.shape[1])


def orientation_selectivity(
    features: np.ndarray,
    orientation_index: np.ndarray,
    frequency_index: np.ndarray,
    angles: np.ndarray,
) -> np.ndarray:
    """Each unit's CV at its preferred spatial frequency: the one of its peak response over
    all orientations and frequencies (not the largest mean over orientations, which favours
    the frequency where the unit is least selective)."""
    curves = tuning_curves(features, orientation_index, frequency_index)
    preferred = curves.max(axis=0).argmax(axis=0)  # [units]
    tuning = curves[:, preferred, np.arange(curves.shape[2])]
    return circular_variance(tuning, angles)


@ANALYSES.register("orientation")
class Orientation(PerEpochAnalysis):
    """Circular variance of every unit's orientation tuning (seed 003 ED Fig. 11) per epoch
    and layer: rows `cv_median` (the paper's measure), `cv_q25`, `cv_q75` and
    `responsive_units` (share of units with a defined CV), probe column `gratings`."""

    name = "orientation"
    summary = (
        "circular variance of each unit's orientation tuning to sinusoidal gratings, median "
        "per layer over training (seed 003 ED Fig. 11)"
    )
    inputs = {"gratings": Activations("gratings"), "stimuli": ProbeFile("gratings")}
    sections = ("orientation",)
    resources = {"mem_mb": 4000, "runtime": 30}

    def cache_settings(self):
        return {"layers": self.settings["layers"]}

    def prepare(self, job):
        stimuli = io.load_npz(job.inputs["stimuli"])
        self.angles = np.unique(stimuli["orientation"])

    def epoch(self, role, acts):
        wanted = self.settings["layers"]
        rows = []
        for layer in layer_names(acts):
            if wanted is not None and layer not in wanted:
                continue
            cv = orientation_selectivity(acts[layer], acts["labels"], acts["coarse"], self.angles)
            kept = cv[np.isfinite(cv)]
            quartiles = np.quantile(kept, [0.25, 0.5, 0.75]) if kept.size else [np.nan] * 3
            for name, q in zip(("q25", "median", "q75"), quartiles, strict=True):
                rows.append((layer, "gratings", f"cv_{name}", float(q)))
            rows.append((layer, "gratings", "responsive_units", kept.size / cv.size))
        return rows, {}
