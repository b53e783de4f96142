"""Backbones and heads: shapes, hooks, parameter counts and equality with reference networks."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ssltrace.models import ARCHITECTURES, MLPHead, build_backbone, describe
from ssltrace.models.backbone import GlobalAvgPool


def torchvision_cifar(name: str) -> nn.Module:
    """torchvision's ResNet with the CIFAR stem (3x3 stride 1, no max-pool) and no fc."""
    model = getattr(torchvision.models, name)()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def record_layers(model, x):
    """Outputs of every layer module, captured with forward hooks as extraction does."""
    seen = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.update({name: out}))
        for name, module in model.layer_modules().items()
    ]
    out = model(x)
    for handle in handles:
        handle.remove()
    return out, seen


def test_registry_lists_the_architectures():
    assert ARCHITECTURES.names() == [
        "res_lh",
        "resnet18",
        "resnet18_imagenet",
        "resnet50",
        "resnet50_imagenet",
        "vit",
    ]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_equals_torchvision_with_cifar_stem(name):
    ours, reference = build_backbone(name), torchvision_cifar(name)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    # Same tensors in the same order, only the stem's names differ (stem.conv vs conv1).
    assert [v.shape for v in ours_state.values()] == [v.shape for v in ref_state.values()]
    ours.load_state_dict(dict(zip(ours_state, ref_state.values(), strict=True)))
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_resnet18_parameter_count():
    # 11,168,832 = torchvision resnet18 (11,689,512) - fc (513,000) - 7x7 stem (9,408)
    # + 3x3 stem (1,728); the independent count comes from torchvision itself.
    assert n_params(build_backbone("resnet18")) == 11_168_832
    assert n_params(torchvision_cifar("resnet18")) == 11_168_832
    assert 11_689_512 - 513_000 - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3 == 11_168_832


@pytest.mark.parametrize(
    "name, width, stage_channels",
    [
        ("resnet18", 0.25, [16, 16, 32, 64, 128]),
        ("resnet18", 0.5, [32, 32, 64, 128, 256]),
        ("resnet18", 0.01, [1, 1, 1, 3, 5]),
        ("resnet50", 0.125, [8, 32, 64, 128, 256]),
    ],
)
def test_resnet_layer_shapes(name, width, stage_channels):
    model = build_backbone(name, width=width)
    assert model.layer_names == ("stem", "layer1", "layer2", "layer3", "layer4", "pool")
    assert model.out_dim == stage_channels[-1]
    x = torch.randn(3, 3, 32, 32)
    out, seen = record_layers(model, x)
    sides = [32, 32, 16, 8, 4]
    for name_, channels, side in zip(model.layer_names, stage_channels, sides, strict=False):
        assert seen[name_].shape == (3, channels, side, side), name_
    assert out.shape == (3, model.out_dim)
    assert seen["pool"] is out
    torch.testing.assert_close(out, seen["layer4"].mean(dim=(2, 3)))


@pytest.mark.parametrize("depth, hidden", [(1, 8), (3, 16)])
def test_res_lh_layer_shapes(depth, hidden):
    model = build_backbone("res_lh", depth=depth, hidden=hidden)
    blocks = tuple(f"block{i}" for i in range(1, depth + 1))
    assert model.layer_names == ("stem1", "stem2", *blocks, "pool")
    assert model.out_dim == hidden
    out, seen = record_layers(model, torch.randn(2, 3, 32, 32))
    assert seen["stem1"].shape == (2, hidden, 16, 16)
    assert seen["stem2"].shape == (2, hidden, 8, 8)
    for block in blocks:
        assert seen[block].shape == (2, hidden, 8, 8)
    assert out.shape == (2, hidden)


def reference_res_lh(model, x):
    """res_L_H written out from seed paper 004's description, reading the model's weights."""

    def bn(h, m):
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    for stem in (model.stem1, model.stem2):
        x = F.relu(bn(F.conv2d(x, stem.conv.weight, stride=2), stem.bn))
    for name in model.layer_names[2:-1]:
        block = getattr(model, name)
        h = F.relu(bn(F.conv2d(x, block.conv1.weight, padding=1), block.bn1))
        x = F.relu(bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2) + x)
    return x.mean(dim=(2, 3))


def test_res_lh_matches_written_out_reference():
    torch.manual_seed(0)
    model = build_backbone("res_3_12")
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_res_lh(model, x))


def test_res_lh_named_form():
    model = build_backbone("res_4_128")
    assert model.layer_names[-2] == "block4" and model.out_dim == 128
    assert build_backbone("res_2_8", depth=2).out_dim == 8
    with pytest.raises(ValueError, match="depth"):
        build_backbone("res_2_8", depth=3)
    with pytest.raises(ValueError, match="depth"):
        build_backbone("res_0_8")


def test_unknown_architecture_lists_known_names():
    with pytest.raises(KeyError, match="resnet18.*resnet50|res_lh.*resnet18") as info:
        build_backbone("vgg11")
    assert "vgg11" in str(info.value)


@pytest.mark.parametrize(
    "name, params, argument",
    [
        ("resnet18", {"width": 0}, "width"),
        ("resnet18", {"width": -0.5}, "width"),
        ("resnet50", {"width": math.nan}, "width"),
        ("resnet18", {"width": True}, "width"),
        ("res_lh", {"depth": 0}, "depth"),
        ("res_lh", {"hidden": 0}, "hidden"),
        ("res_lh", {"depth": 2.5}, "depth"),
        ("resnet18", {"depth": 4}, "depth"),
    ],
)
def test_bad_parameters_name_the_argument(name, params, argument):
    with pytest.raises(ValueError, match=argument):
        build_backbone(name, **params)


def test_describe_gives_layers_at_default_parameters():
    info = describe()
    assert set(info) == set(ARCHITECTURES.names())
    assert info["resnet18"]["layers"] == ["stem", "layer1", "layer2", "layer3", "layer4", "pool"]
    assert info["res_lh"]["layers"] == [
        "stem1",
        "stem2",
        "block1",
        "block2",
        "block3",
        "block4",
        "pool",
    ]
    assert all(entry["description"] for entry in info.values())


def test_channels_last_gives_the_same_features():
    model = build_backbone("resnet18", width=0.125).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_training_step_is_deterministic_under_deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            torch.manual_seed(0)
            model = build_backbone("res_2_8")
            model(torch.randn(4, 3, 32, 32)).square().sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert torch.equal(grads[0], grads[1])
    finally:
        torch.use_deterministic_algorithms(previous)


def test_global_pool_equals_adaptive_average_pool():
    x = torch.randn(2, 5, 7, 3)
    expected = nn.AdaptiveAvgPool2d(1)(x).flatten(1)
    torch.testing.assert_close(GlobalAvgPool()(x), expected)


def test_mlp_head_order_is_fc_relu_bn_fc():
    torch.manual_seed(0)
    head = MLPHead(6, 10, 4)
    assert [name for name, _ in head.named_children()] == ["fc1", "relu", "bn", "fc2"]
    calls = []
    for name, module in head.named_children():
        module.register_forward_hook(lambda _m, _i, _o, name=name: calls.append(name))
    x = torch.randn(8, 6)
    out = head(x)
    assert calls == ["fc1", "relu", "bn", "fc2"]
    # Written out: BatchNorm (training mode, batch statistics) of the rectified fc1 output.
    h = torch.relu(x @ head.fc1.weight.T + head.fc1.bias)
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + head.bn.eps)
    expected = (h * head.bn.weight + head.bn.bias) @ head.fc2.weight.T + head.fc2.bias
    torch.testing.assert_close(out, expected)
    assert out.shape == (8, 4)


def test_mlp_head_defaults_and_validation():
    head = MLPHead(12, out_dim=3)
    assert head.fc1.out_features == 12 and head.bn.num_features == 12
    with pytest.raises(ValueError, match="hidden_dim"):
        MLPHead(12, 0, 3)
    with pytest.raises(ValueError, match="in_dim"):
        MLPHead(-1, 4, 3)
