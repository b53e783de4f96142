"""MINE against mutual information known in closed form, and the compression analysis."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace import io, layout
from ssltrace.analysis import analysis
from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.mine import dv_bound, gaussian_mi, gaussian_pairs, mine_estimate

FAST = {"iterations": 1000, "batch_size": 256, "hidden": 128, "lr": 1e-3, "device": "cpu"}


def test_dv_bound_by_hand():
    # mean(T_joint) = 2; log mean(exp T_marg) = log((e^0 + e^{log 3}) / 2) = log 2.
    joint = torch.tensor([1.0, 3.0], dtype=torch.float64)
    marginal = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    assert float(dv_bound(joint, marginal)) == pytest.approx(2.0 - math.log(2.0))


def test_gaussian_pairs_have_the_planted_correlation():
    x, z = gaussian_pairs(200_000, 2, 2.0, seed=3)
    rho = math.sqrt(1 - math.exp(-2.0))  # -2/2 log(1 - rho^2) = 2 nats
    assert np.corrcoef(x[:, 0], z[:, 0])[0, 1] == pytest.approx(rho, abs=0.005)
    assert gaussian_mi(2, rho) == pytest.approx(2.0)


@pytest.mark.parametrize("nats", [1.0, 2.0, 4.0])
def test_mine_recovers_gaussian_mutual_information(nats):
    # Belghazi et al.'s check: correlated Gaussians, I = -d/2 log(1 - rho^2); within 10 %.
    torch.set_num_threads(1)
    x, z = gaussian_pairs(3000, 2, nats, seed=1)
    assert mine_estimate(x, z, seed=0, **FAST) == pytest.approx(nats, rel=0.10)


def test_mine_of_independent_variables_is_near_zero():
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((4000, 2)), rng.standard_normal((4000, 2))
    assert abs(mine_estimate(x, z, seed=0, **{**FAST, "iterations": 500})) < 0.05


def test_mine_is_seeded_and_checks_inputs():
    x, z = gaussian_pairs(500, 2, 1.0)
    short = {**FAST, "iterations": 20}
    assert mine_estimate(x, z, seed=4, **short) == mine_estimate(x, z, seed=4, **short)
    with pytest.raises(ValueError, match="pair up"):
        mine_estimate(x, z[:10], **short)
    with pytest.raises(ValueError, match="ema"):
        mine_estimate(x, z, **{**short, "ema": 0.0})


SETTINGS = {
    "inits": 2,
    "iterations": 300,
    "batch_size": 128,
    "hidden": 64,
    "depth": 2,
    "lr": 1e-3,
    "ema": 0.01,
    "eval_shuffles": 5,
    "standardise": True,
    "seed": 0,
    "device": "cpu",
}


def test_compression_analysis_orders_planted_layers(tmp_path):
    # Planted answer: 'copy' keeps 4 pixels of each image, 'noise' is independent of them,
    # so I(X; copy) > I(X; noise) ~ 0, at every epoch; one row per epoch x layer x statistic.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(600, 4, 4, 3), dtype=np.uint8)
    io.save_npz(tmp_path / "known.npz", {"images": images})
    folder = tmp_path / "acts"
    pixels = images.reshape(600, -1).astype(np.float32) / 255
    for epoch in (0, 1):
        io.save_npz(
            folder / layout.epoch_file(epoch),
            {
                "layers": np.array(["copy", "noise"]),
                "copy": pixels[:, :4] + 0.01 * rng.standard_normal((600, 4)).astype(np.float32),
                "noise": rng.standard_normal((600, 3)).astype(np.float32),
                "epoch": np.int64(epoch),
            },
        )
    job = Job("m", 0, [0, 1], {"known": folder, "images": tmp_path / "known.npz"}, log=print)
    arrays = {"mi": tmp_path / "mi.npz"}
    run_job(analysis("compression")(SETTINGS), job, tmp_path / "t.tsv", arrays)
    table = pd.read_csv(tmp_path / "t.tsv", sep="\t")
    assert len(table) == 2 * 2 * 2
    mi = table[table.metric == "mi"].set_index(["epoch", "layer"])["value"]
    for epoch in (0, 1):
        assert mi[(epoch, "copy")] > 1.0 > 0.5 > mi[(epoch, "noise")]
    stored = io.load_npz(tmp_path / "mi.npz")
    assert stored["mi"].shape == (2, 2, 2)  # epoch x layer x init
    assert stored["mi"][0].mean(axis=1) == pytest.approx(mi.loc[0].loc[["copy", "noise"]].values)


def test_compression_layers_must_be_extracted():
    from ssltrace import study
    from ssltrace.config import ConfigError
    from tests.test_config import base, put

    cfg = put(base(), "compression.layers", ["layer9"])
    with pytest.raises(ConfigError, match=r"compression\.layers.*'layer9'"):
        study.checked(cfg)
    assert study.checked(put(base(), "compression.layers", ["pool"]))["compression"]["inits"] == 2
