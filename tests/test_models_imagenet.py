"""ImageNet-stem ResNets at 224 px: equality with torchvision, layer shapes, the no-pool
variant and initialisation from a torchvision weights file."""

import pytest
import torch
import torchvision
from torch import nn

from ssltrace.io import ArtifactReadError
from ssltrace.models import build_backbone, describe
from ssltrace.network import layer_names

LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4", "pool")


def record_layers(model, x):
    """Outputs of every layer module, captured with forward hooks as extraction does."""
    seen = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.update({name: out}))
        for name, module in model.layer_modules().items()
    ]
    with torch.no_grad():
        out = model(x)
    for handle in handles:
        handle.remove()
    return out, seen


def torchvision_features(name: str, seed: int) -> nn.Module:
    """torchvision's ResNet, seeded, without its classifier: the reference network."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)()
    return model


def image(batch: int, side: int = 224) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "name, channels",
    [
        ("resnet18_imagenet", [64, 64, 128, 256, 512]),
        ("resnet50_imagenet", [64, 256, 512, 1024, 2048]),
    ],
)
@pytest.mark.parametrize("width", [1.0, 0.125])
def test_layer_shapes_at_224(name, channels, width):
    model = build_backbone(name, width=width).eval()
    channels = [max(1, round(c * width)) for c in channels]
    assert model.layer_names == LAYERS
    assert model.out_dim == channels[-1]
    out, seen = record_layers(model, image(1))
    for layer, n_channels, side in zip(LAYERS, channels, [56, 56, 28, 14, 7], strict=False):
        assert seen[layer].shape == (1, n_channels, side, side), layer
    assert out.shape == (1, channels[-1])
    torch.testing.assert_close(out, seen["layer4"].mean(dim=(2, 3)))


def test_width_one_is_torchvisions_network_and_weights_need_it(tmp_path):
    torch.manual_seed(0)
    ours = build_backbone("resnet18_imagenet", width=1.0)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    theirs = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, theirs[_theirs(k)]) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="weights.*width 1, not 0.5"):
        build_backbone("resnet18_imagenet", width=0.5, weights=str(tmp_path / "w.pth"))


def _theirs(key: str) -> str:
    return key.removeprefix("stem.")


def test_layer_names_documented_and_free():
    assert describe()["resnet50_imagenet"]["layers"] == list(LAYERS)
    # On the meta device: no weights file is read (it need not exist to name the layers).
    arch = {"name": "resnet18_imagenet", "weights": "/nonexistent/resnet18.pth"}
    assert layer_names(arch)[:6] == list(LAYERS)
    unpooled = {"name": "resnet18_imagenet", "final_pool": False}
    assert layer_names(unpooled)[:5] == list(LAYERS[:5])
    assert "pool" not in layer_names(unpooled)


def test_resnet18_equals_torchvision():
    reference = torchvision_features("resnet18", seed=0)
    reference.fc = nn.Identity()
    ours = build_backbone("resnet18_imagenet")
    ours.load_state_dict(
        {
            ("stem." + k if k.split(".")[0] in ("conv1", "bn1") else k): v
            for k, v in reference.state_dict().items()
        }
    )
    ours.eval(), reference.eval()
    x = image(2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_no_final_pooling_outputs_the_flattened_layer4():
    model = build_backbone("resnet18_imagenet", final_pool=False).eval()
    assert model.layer_names == LAYERS[:5]
    assert model.out_dim == 512 * 7 * 7
    out, seen = record_layers(model, image(2))
    assert out.shape == (2, 25_088)
    torch.testing.assert_close(out, seen["layer4"].flatten(1))
    # Another input side: out_dim follows image_size (64 px -> 2 x 2 map).
    small = build_backbone("resnet18_imagenet", final_pool=False, image_size=64).eval()
    assert small.out_dim == 512 * 2 * 2
    with torch.no_grad():
        assert small(image(1, 64)).shape == (1, 2048)
        with pytest.raises(ValueError, match="image_size=64"):
            small(image(1, 96))


def test_weights_file_initialises_the_backbone(tmp_path):
    reference = torchvision_features("resnet18", seed=3)
    path = tmp_path / "resnet18-test.pth"
    torch.save(reference.state_dict(), path)  # the file holds fc.* too, as torchvision's do
    torch.manual_seed(99)  # another initialisation: only the file can make the two agree
    ours = build_backbone("resnet18_imagenet", weights=str(path)).eval()
    reference.fc = nn.Identity()
    reference.eval()
    x = image(2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    # The unpooled variant takes the same file.
    flat = build_backbone("resnet18_imagenet", weights=str(path), final_pool=False).eval()
    with torch.no_grad():
        assert torch.equal(flat.stem.conv1.weight, reference.conv1.weight)


def test_bad_weights_files_are_named(tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="weights.*absent.pth"):
        build_backbone("resnet18_imagenet", weights=str(missing))
    other = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), other)
    with pytest.raises(ValueError, match="weights.*resnet50.pth.*does not fit"):
        build_backbone("resnet18_imagenet", weights=str(other))
    good = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    with pytest.raises(ValueError, match="does not fit.*shape: stem.conv1.weight"):
        build_backbone("resnet18_imagenet", weights=str(good), in_channels=1)
    coded = tmp_path / "coded.pth"
    torch.save({"state_dict": torchvision.models.resnet18()}, coded)  # a pickled module
    with pytest.raises(ArtifactReadError, match="refusing"):
        build_backbone("resnet18_imagenet", weights=str(coded))
    assert coded.exists()  # a user's file is reported, never removed


@pytest.mark.parametrize(
    "params, argument",
    [
        ({"image_size": 0}, "image_size"),
        ({"final_pool": "no"}, "final_pool"),
        ({"in_channels": 0}, "in_channels"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_parameters_name_the_argument(params, argument):
    with pytest.raises(ValueError, match=argument):
        build_backbone("resnet18_imagenet", **params)


def test_one_channel_stem():
    model = build_backbone("resnet18_imagenet", in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 512)


def test_config_checks_the_weights_file_and_accepts_the_architecture(tmp_path):
    from ssltrace import checks
    from ssltrace.config import ConfigError, validate
    from tests.test_config import base

    cfg = base()
    cfg["architecture"] = {"name": "resnet18_imagenet", "final_pool": False, "weights": "x.pth"}
    for section in ("compression", "random_targets"):  # the CI preset names `pool`: none here
        cfg[section]["layers"] = None
    cfg = validate(cfg)
    with pytest.raises(ConfigError, match=r"'architecture.weights' = 'x.pth': no such file"):
        checks.check(cfg)
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"")
    cfg["architecture"]["weights"] = str(weights)
    checks.check(cfg)  # the file's content is checked when the backbone is built


def test_a_checkpoint_loads_without_its_initial_weights_file(tmp_path):
    from ssltrace import io
    from ssltrace.network import build_network, load_network

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    arch = {"name": "resnet18_imagenet", "weights": str(weights)}
    net = build_network(arch, "supervised", None, n_classes=4)
    ckpt = {"architecture": arch, "method": "supervised", "method_params": net.params}
    ckpt |= {"n_classes": 4, "state_dict": net.state_dict()}
    path = tmp_path / "epoch_001.pt"
    io.torch_save(path, ckpt)
    weights.unlink()  # moved away after training started
    loaded, _ = load_network(path, torch.device("cpu"))
    x = image(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.probe_forward(x), net.eval().probe_forward(x))
