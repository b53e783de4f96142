"""Orientation selectivity (seed 003 ED Fig. 11): circular variance by hand, on a layer of
Gabor filters against its closed form, and on an isotropic filter."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import iv

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.orientation import (
    Orientation,
    circular_variance,
    grating_images,
    grating_probe,
    orientation_selectivity,
    tuning_curves,
)
from ssltrace.io import save_npz
from ssltrace.tables import read


def test_circular_variance_by_hand():
    # R = 1 + m cos 2(θ − θ0) over N even orientations: Σ R e^{2iθ} = N m / 2 e^{2iθ0},
    # Σ R = N, so CV = 1 − m / 2.
    angles = np.arange(8) * np.pi / 8
    m = np.array([0.0, 0.5, 1.0])
    tuning = 1 + m[None, :] * np.cos(2 * (angles[:, None] - 0.4))
    np.testing.assert_allclose(circular_variance(tuning, angles), 1 - m / 2)
    one = np.zeros((8, 1))
    one[3] = 2.0
    assert circular_variance(one, angles)[0] == pytest.approx(0.0)
    # a negative response or a silent unit has no CV
    bad = np.stack([np.r_[-1.0, np.ones(7)], np.zeros(8)], axis=1)
    assert np.isnan(circular_variance(bad, angles)).all()


def test_tuning_curves_average_phases_and_pick_preferred_frequency():
    o = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    f = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    x = np.array([[1.0], [3], [4.5], [4.5], [5], [5], [1], [1]])
    curves = tuning_curves(x, o, f)
    np.testing.assert_allclose(curves[:, :, 0], [[2, 5], [4.5, 1]])
    # the peak (5) is at frequency 1, although frequency 0 has the larger mean over
    # orientations (3.25 vs 3): tuning (5, 1) at 0 and 90 degrees, CV = 1 - |5 - 1| / 6
    cv = orientation_selectivity(x, o, f, np.array([0, np.pi / 2]))
    assert cv[0] == pytest.approx(1 - 4 / 6)
    with pytest.raises(ValueError, match="cell"):  # frequency 1 never shown
        tuning_curves(x[:6], o[:6], np.array([0, 0, 0, 0, 2, 2]))


def test_gratings_run_along_their_orientation():
    g = grating_images(32, 4, [3, 5], 2)
    assert g["images"].shape == (16, 32, 32)
    vertical = g["images"][(g["orientation_index"] == 0) & (g["frequency_index"] == 0)][0]
    # θ = 0 varies along x (columns) only, with 3 cycles across the image
    np.testing.assert_allclose(vertical, np.broadcast_to(vertical[0], vertical.shape))
    spectrum = np.abs(np.fft.rfft(vertical[0]))
    assert spectrum.argmax() == 3
    horizontal = g["images"][(g["orientation_index"] == 2) & (g["frequency_index"] == 1)][0]
    np.testing.assert_allclose(horizontal, np.broadcast_to(horizontal[:, :1], horizontal.shape))
    probe = grating_probe(32, 8, [2, 4], 4)
    assert probe["images"].dtype == np.uint8 and probe["images"].shape == (64, 32, 32, 3)
    assert probe["images"].min() == 0 and probe["images"].max() == 255
    with pytest.raises(ValueError, match="orientations"):
        grating_images(32, 1, [2], 4)
    with pytest.raises(ValueError, match="frequencies"):
        grating_images(32, 8, [0], 4)


def _layer_responses(kernels: np.ndarray, stimuli: dict) -> np.ndarray:
    """conv (valid) -> ReLU -> spatial mean, as the pipeline's extracted channel of a
    rectified layer with `extract.pooling: mean`."""
    x = torch.from_numpy(stimuli["images"][:, None])
    w = torch.from_numpy(kernels[:, None])
    return F.relu(F.conv2d(x, w)).mean(dim=(2, 3)).numpy()


def _grid(half: int):
    c = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(c, c, indexing="ij")  # y, x


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_gabor_layer_matches_closed_form(sigma):
    # A cosine Gabor exp(−r²/2σ²) cos(2π f0 (x cos θ0 + y sin θ0)) answers a grating of
    # frequency f0 at orientation offset Δ with amplitude ∝ e^{−a(1−cos Δ)} + e^{−a(1+cos Δ)},
    # a = 4π²σ²f0² (its Fourier transform: Gaussians at ±f0). Rectified and averaged over
    # space the response is amplitude / π, and over Δ ∈ [0, π) the CV is 1 − I2(a) / I0(a).
    size, f0_cycles = 64, 8
    f0 = f0_cycles / size
    y, x = _grid(12)
    thetas0 = np.array([0.0, 0.3, 1.2, np.pi / 2])
    envelope = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    kernels = np.stack(
        [envelope * np.cos(2 * np.pi * f0 * (x * np.cos(t) + y * np.sin(t))) for t in thetas0]
    )
    stimuli = grating_images(size, 16, [4, f0_cycles, 16], 8)
    feats = _layer_responses(kernels, stimuli)
    angles = np.unique(stimuli["orientation"])
    cv = orientation_selectivity(
        feats, stimuli["orientation_index"], stimuli["frequency_index"], angles
    )
    a = 4 * np.pi**2 * sigma**2 * f0**2
    expected = 1 - iv(2, a) / iv(0, a)
    assert 0.2 < expected < 0.8  # a mid-range selectivity, not a degenerate case
    np.testing.assert_allclose(cv, expected, atol=0.01)
    # the preferred orientation is the filter's
    curves = tuning_curves(feats, stimuli["orientation_index"], stimuli["frequency_index"])
    np.testing.assert_array_equal(curves[:, 1].argmax(axis=0), np.round(thetas0 / (np.pi / 16)))


def test_isotropic_filter_is_unselective():
    y, x = _grid(12)
    r2 = x**2 + y**2
    dog = np.exp(-r2 / (2 * 1.5**2)) / 1.5**2 - np.exp(-r2 / (2 * 3.0**2)) / 3.0**2
    stimuli = grating_images(64, 16, [4, 8, 12], 8)
    feats = _layer_responses(dog[None], stimuli)
    angles = np.unique(stimuli["orientation"])
    cv = orientation_selectivity(
        feats, stimuli["orientation_index"], stimuli["frequency_index"], angles
    )
    assert cv[0] > 0.99


def test_orientation_analysis_rows(tmp_path):
    probe = grating_probe(32, 8, [2, 4], 4)
    save_npz(tmp_path / "gratings.npz", probe)
    folder = tmp_path / "acts"
    folder.mkdir()
    angles = np.unique(probe["orientation"])
    # layer "tuned": unit k answers only orientation k (CV 0); "flat": all alike (CV 1);
    # "signed": a unit with negative responses (no CV) and a tuned one.
    onehot = np.eye(8)[probe["labels"]]
    signed = np.stack([onehot[:, 0] - 0.5, onehot[:, 1]], axis=1)
    layers = {"tuned": onehot, "flat": np.ones((64, 3)), "signed": signed}
    meta = {"labels": probe["labels"], "coarse": probe["coarse"], "epoch": np.int64(3)}
    arrays = {"layers": np.array(list(layers)), **layers, **meta, "cache_key": np.array("k")}
    save_npz(folder / "epoch_003.npz", arrays)
    job = Job(
        "simclr",
        0,
        [3],
        {"gratings": folder, "stimuli": tmp_path / "gratings.npz"},
        cache_dir=tmp_path / "cache",
        log=lambda m: None,
    )
    run_job(Orientation({"layers": None}), job, tmp_path / "t.tsv", {})
    frame = read(tmp_path / "t.tsv").set_index(["layer", "metric"])["value"]
    assert frame[("tuned", "cv_median")] == pytest.approx(0.0, abs=1e-12)
    assert frame[("flat", "cv_median")] == pytest.approx(1.0)
    assert frame[("signed", "responsive_units")] == 0.5
    assert frame[("signed", "cv_median")] == pytest.approx(0.0, abs=1e-12)
    assert circular_variance(np.ones((8, 1)), angles)[0] == pytest.approx(1.0)
    run_job(Orientation({"layers": ["flat"]}), job, tmp_path / "t2.tsv", {})
    assert set(read(tmp_path / "t2.tsv")["layer"]) == {"flat"}


def test_gratings_probe_is_written_at_the_dataset_image_size(tmp_path):
    from ssltrace.io import load_npz
    from ssltrace.splits import write_probe

    save_npz(tmp_path / "data.npz", {"train_images": np.zeros((2, 24, 24, 3), np.uint8)})
    options = {"orientations": 8, "frequencies": [2, 5], "phases": 3, "contrast": 0.5}
    write_probe("gratings", tmp_path / "data.npz", None, tmp_path / "g.npz", **options)
    probe = load_npz(tmp_path / "g.npz")
    assert probe["images"].shape == (48, 24, 24, 3)
    assert 60 <= probe["images"].min() and probe["images"].max() <= 192  # half contrast
    np.testing.assert_array_equal(np.unique(probe["labels"]), np.arange(8))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"orientation": {"layers": ["layer9"]}}, "orientation.layers"),
        ({"probes": {"gratings": {"orientations": 4}}}, "probes.gratings.orientations"),
        ({"probes": {"gratings": {"frequencies": [0]}}}, "probes.gratings.frequencies"),
    ],
)
def test_bad_orientation_settings_name_the_key(override, key):
    from ssltrace import study
    from ssltrace.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        root = Path(__file__).resolve().parents[1]
        study.load(root / "config.yaml", root / "presets/ci.yaml", overrides=override)
