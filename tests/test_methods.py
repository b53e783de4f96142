"""Methods: contract, parameter checks, EMA/queue updates, and collapse on toy problems."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssltrace.methods import METHODS, build_method, describe
from ssltrace.methods.base import cosine_momentum
from ssltrace.models import build_backbone
from ssltrace.network import build_network

ALL = [
    "autoencoder",
    "barlow_twins",
    "byol",
    "cmc",
    "colorization",
    "cpc",
    "deepcluster",
    "depth_prediction",
    "few_label",
    "instance_recognition",
    "local_aggregation",
    "local_label_propagation",
    "mean_teacher",
    "moco_v2",
    "relative_position",
    "simclr",
    "simsiam",
    "supervised",
    "untrained",
    "vicreg",
]
# Methods whose loss needs an epoch's preparation first (DeepCluster's pseudo-labels, the
# colour prior), whose head reads the unpooled map (the auto-encoder's code) or that take
# depth maps (depth_prediction): their own test
# files (tests/test_method_*.py) check their losses and heads.
PREPARED = {"autoencoder", "colorization", "deepcluster", "depth_prediction", "untrained"}
SMALL = {  # shrink the wide default projectors so the tests stay fast
    "byol": {"proj_hidden_dim": 64, "pred_hidden_dim": 64},
    "moco_v2": {"queue_size": 32},
    "simsiam": {"proj_dim": 64, "pred_hidden_dim": 16},
    "vicreg": {"proj_dim": 64},
    "barlow_twins": {"proj_dim": 64},
    "instance_recognition": {"proj_dim": 16},
    "local_aggregation": {"proj_dim": 16},
    "cmc": {"negatives": 4},
    "local_label_propagation": {"proj_dim": 16, "density_k": 3, "propagation_k": 3},
}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions on a shared 2-core machine: a second thread mostly spins and waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def backbone():
    return build_backbone("resnet18", width=0.125)


def make(name, params=None, n_classes=5, seed=0):
    """A small network of method `name`, its backbone built for the method's input channels."""
    torch.manual_seed(seed)
    arch = {"name": "resnet18", "width": 0.125}
    return build_network(arch, name, {**SMALL.get(name, {}), **(params or {})}, n_classes)


def views(n_views=2, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(n_views)]


def test_registry_holds_every_method_and_describe_lists_them():
    assert METHODS.names() == ALL
    text = describe()
    for name in ALL:
        assert f"{name}:" in text
    assert "temperature=0.5" in text and "(not trained)" in text


@pytest.mark.parametrize("name", [n for n in ALL if n not in PREPARED])
def test_loss_contract_and_gradients(name):
    method = make(name)
    method.setup(6)  # memory banks: one entry per training image; a no-op for the others
    assert method.head.fc1.in_features == method.backbone.out_dim
    labels = torch.tensor([0, 1, 2, 3, 4, 0]) if method.uses_labels else None
    out = method.loss(views(method.n_views), labels, torch.arange(6))
    assert set(out) >= {"loss", "invariance", "regularisation"}
    assert all(v.ndim == 0 for v in out.values())
    assert torch.isfinite(out["loss"])
    if name in ("supervised", "few_label"):
        assert math.isnan(out["invariance"].item())
    elif name != "simclr":  # SimCLR logs seed 004's split, which does not add up (nt_xent.py)
        total = (out["invariance"] + out["regularisation"]).item()
        assert total == pytest.approx(out["loss"].item(), rel=1e-5, abs=1e-6)
    out["loss"].backward()
    stem = method.backbone.stem.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    method.after_step(0.5)


def test_method_attributes():
    assert make("supervised").n_views == 1 and make("supervised").uses_labels
    assert make("supervised").head.fc2.out_features == 5
    for name in ("simclr", "simsiam", "vicreg", "byol", "barlow_twins", "moco_v2"):
        cls = METHODS.get(name)
        assert cls.n_views == 2 and not cls.uses_labels and cls.trains
    untrained = make("untrained")
    assert not untrained.trains and untrained.head.fc1.out_features == untrained.backbone.out_dim
    assert untrained.head.fc2.out_features == 128
    with pytest.raises(RuntimeError, match="never trained"):
        untrained.loss(views(), None)


def test_simclr_head_defaults():
    method = make("simclr")
    assert method.head.fc1.out_features == method.backbone.out_dim == 64
    assert method.head.fc2.out_features == 128
    assert method.params["temperature"] == 0.5


def test_unknown_param_names_the_key_and_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        make("simclr", {"temprature": 0.1})
    message = str(info.value)
    assert "'temprature'" in message and "proj_dim, proj_hidden_dim, temperature" in message


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("simclr", {"temperature": "hot"}, "must be a number"),
        ("simclr", {"temperature": -1.0}, "must be > 0"),
        ("simsiam", {"stop_gradient": 1}, "must be a boolean"),
        ("byol", {"base_momentum": 1.5}, r"must be in \[0, 1\]"),
        ("moco_v2", {"queue_size": 0}, "must be > 0"),
        ("vicreg", {"std_coeff": -1.0}, "must be >= 0"),
        ("simclr", {"proj_hidden_dim": 0}, "positive int or null"),
    ],
)
def test_bad_param_values(name, params, match):
    with pytest.raises(ValueError, match=match):
        make(name, params)


def test_supervised_needs_labels():
    with pytest.raises(ValueError, match="needs labels"):
        make("supervised").loss(views(1), None)


def test_wrong_number_of_views():
    with pytest.raises(ValueError, match="list of 2"):
        make("simclr").loss(views(1), None)


def test_state_dict_carries_target_and_queue():
    byol_keys = make("byol").state_dict().keys()
    assert any(k.startswith("target_backbone.") for k in byol_keys)
    assert any(k.startswith("target_head.") for k in byol_keys)
    moco_keys = make("moco_v2").state_dict().keys()
    assert {"queue", "queue_ptr"} <= set(moco_keys)
    assert any(k.startswith("key_backbone.") for k in moco_keys)
    # Restoring a state dict restores the queue too.
    a, b = make("moco_v2", seed=0), make("moco_v2", seed=1)
    assert not torch.equal(a.queue, b.queue)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.queue, b.queue)


def test_cosine_momentum_schedule():
    # BYOL: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    assert cosine_momentum(0.99, 1.0, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 1.0, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.9, 0.9, 0.3) == pytest.approx(0.9)


def test_byol_target_is_an_ema_of_the_online_network():
    method = make("byol")
    assert not any(p.requires_grad for p in method.target_backbone.parameters())
    with torch.no_grad():  # make online and target differ
        for p in method.backbone.parameters():
            p.add_(torch.randn_like(p))
    online = [p.clone() for p in method.backbone.parameters()]
    target = [p.clone() for p in method.target_backbone.parameters()]
    progress = 0.25
    tau = 1 - (1 - 0.99) * (math.cos(math.pi * progress) + 1) / 2
    method.after_step(progress)
    for t_old, o, t_new in zip(target, online, method.target_backbone.parameters(), strict=True):
        torch.testing.assert_close(t_new, tau * t_old + (1 - tau) * o)
    assert method.uses_progress and not make("byol", {"final_momentum": 0.99}).uses_progress


def test_moco_queue_is_updated_after_the_step_with_the_keys():
    method = make("moco_v2", {"queue_size": 16})
    before = method.queue.clone()
    batch = views(batch=6)
    method.loss(batch, None)
    assert torch.equal(method.queue, before)  # nothing enqueued before the step ends
    with torch.no_grad():
        keys = method.key_head(method.key_backbone(torch.cat(batch)))
    method.after_step(0.0)  # progress 0: momentum 0.99 moves the key encoder, not the keys
    torch.testing.assert_close(method.queue[:12], F.normalize(keys, dim=1), rtol=1e-4, atol=1e-5)
    assert torch.equal(method.queue[12:], before[12:])
    assert int(method.queue_ptr) == 12
    method.loss(batch, None)
    method.after_step(0.1)  # 12 more keys wrap around the 16-row ring
    assert int(method.queue_ptr) == 8


def test_moco_asymmetric_enqueues_one_view():
    method = make("moco_v2", {"queue_size": 16, "symmetric": False})
    method.loss(views(batch=6), None)
    method.after_step(0.0)
    assert int(method.queue_ptr) == 6


# --- Collapse on a toy problem ------------------------------------------------------------


class ToyBackbone(nn.Module):
    """A two-layer MLP on 16-d points: just enough network to collapse or not."""

    out_dim = 32

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))

    def forward(self, x):
        return self.net(x)


def train_toy(name, params, steps, lr):
    """Train on 8 Gaussian clusters; views add noise and keep a random 30% of coordinates."""
    torch.manual_seed(0)
    centres = torch.randn(8, 16) * 2
    method = build_method(name, ToyBackbone(), params, 1)
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = centres[torch.randint(0, 8, (128,), generator=g)]
        x = x + torch.randn(x.shape, generator=g)
        pair = [
            (x + torch.randn(x.shape, generator=g)) * (torch.rand(x.shape, generator=g) < 0.3)
            for _ in range(2)
        ]
        loss = method.loss(pair, None)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return method.head(method.backbone(x))


def test_simsiam_collapses_without_stop_gradient_and_not_with_it():
    # SimSiam Fig. 2: the per-dimension std of the l2-normalised output goes to 0 on collapse
    # and stays near 1/sqrt(d) otherwise.
    params = {"proj_dim": 32, "pred_hidden_dim": 16}
    d = 32
    kept = train_toy("simsiam", {**params, "stop_gradient": True}, steps=400, lr=0.05)
    dropped = train_toy("simsiam", {**params, "stop_gradient": False}, steps=400, lr=0.05)
    std_kept = F.normalize(kept, dim=1).std(dim=0).mean().item()
    std_dropped = F.normalize(dropped, dim=1).std(dim=0).mean().item()
    assert std_kept > 0.5 / math.sqrt(d)
    assert std_dropped < 0.1 / math.sqrt(d)


def test_vicreg_variance_term_prevents_collapse():
    params = {"proj_dim": 32, "proj_hidden_dim": 64}
    full = train_toy("vicreg", params, steps=300, lr=0.01)
    invariance_only = train_toy(
        "vicreg", {**params, "std_coeff": 0.0, "cov_coeff": 0.0}, steps=300, lr=0.01
    )
    assert full.std(dim=0).mean().item() > 0.25
    assert invariance_only.std(dim=0).mean().item() < 0.05


def _out_of_range_cases():
    for name in METHODS.names():
        cls = METHODS.get(name)
        for attr, bad, match in (
            ("positive", 0, "must be > 0"),
            ("non_negative", -1.0, "must be >= 0"),
            ("unit_interval", 1.5, r"must be in \[0, 1\]"),
        ):
            for key in getattr(cls, attr):
                # an int parameter gets an int (a float would fail the type check first)
                value = -1 if bad == -1.0 and type(cls.defaults[key]) is int else bad
                # a None default (a width) is typed "positive int or null": 0 fails that first
                why = "positive int or null" if cls.defaults[key] is None else match
                yield pytest.param(name, key, value, why, id=f"{name}.{key}={value}")


@pytest.mark.parametrize("name, key, value, match", _out_of_range_cases())
def test_resolve_checks_every_declared_range_without_building_a_model(name, key, value, match):
    # Config validation calls `resolve` only, so each range must be enforced there.
    with pytest.raises(ValueError, match=match):
        METHODS.get(name).resolve({key: value})
    assert METHODS.get(name).resolve({})[key] == METHODS.get(name).defaults[key]


def test_every_numeric_param_has_a_declared_range():
    for name in METHODS.names():
        cls = METHODS.get(name)
        ranged = {*cls.positive, *cls.non_negative, *cls.unit_interval}
        numeric = {k for k, v in cls.defaults.items() if type(v) in (int, float)}
        assert numeric <= ranged, f"{name}: no range for {sorted(numeric - ranged)}"


def test_moco_shuffled_batchnorm_groups_keys_by_a_random_permutation():
    method = make("moco_v2", {"shuffle_bn_groups": 2, "symmetric": False})
    method.train()
    x = views(2, batch=8)
    torch.manual_seed(5)
    keys = method._keys(x[1:])
    torch.manual_seed(5)
    perm = torch.randperm(8)
    expected = torch.empty_like(keys)
    for group in perm.chunk(2):  # BatchNorm statistics of each group of the permutation
        with torch.no_grad():
            expected[group] = method.key_head(method.key_backbone(x[1][group])).float()
    assert torch.allclose(keys, expected, atol=1e-6)
    with torch.no_grad():
        whole = method.key_head(method.key_backbone(x[1])).float()
    assert not torch.allclose(keys, whole, atol=1e-4)  # the groups' statistics differ
    out = method.loss(x)
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="shuffle_bn_groups=4 needs at least 8 images"):
        make("moco_v2", {"shuffle_bn_groups": 4}).loss(views(2, batch=3))


def test_seed001_moco_preset_is_the_moco_v2_paper():
    """Issue 18 item 6: one-directional InfoNCE, constant momentum 0.999, shuffled BN over 8
    groups, tau 0.2, SGD lr 0.03 per 256 images with wd 1e-4 (Chen, Fan, Girshick & He 2020)."""
    from ssltrace import study
    from tests.conftest import ROOT

    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/seed001_moco.yaml")
    run = study.run_settings(cfg, "moco_v2_seed001", 0)
    assert run["method"] == "moco_v2"
    net = build_network({"name": "resnet18", "width": 0.125}, "moco_v2", run["method_params"], 4)
    p = net.params
    assert p["symmetric"] is False and p["shuffle_bn_groups"] == 8 and p["temperature"] == 0.2
    assert not net.uses_progress
    assert net.momentum(0.0) == net.momentum(0.7) == 0.999
    optimizer = run["train"]["optimizer"]
    assert optimizer["lr"] / run["train"]["batch_size"] == pytest.approx(0.03 / 256)
    assert optimizer["weight_decay"] == 1.0e-4 and optimizer["momentum"] == 0.9
