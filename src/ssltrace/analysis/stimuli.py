"""Optimal stimuli of chosen channels (seed paper 003, Extended Data Figs. 5-6).

Seed 003 (Methods, "Optimal Stimuli Computation", after Olah et al. 2017): the image that
maximises a channel's spatially averaged response is found by optimising the image's 2-D
discrete Fourier coefficients with Adam (learning rate 0.05, 512 steps), applying random
jitter, scaling and rotation to the image at every step. Here:

- parameterisation: the coefficients of `torch.fft.irfft2` per colour channel, scaled by
  1 / max(f, 1/size) (f the frequency in cycles per pixel, as Olah et al.'s decorrelated
  Fourier basis), then a sigmoid, giving RGB in [0, 1]. The image enters the network as the
  extracted probe images do: RGB normalised with the run's augmentation mean/std, or, for a
  backbone taking one channel (CMC, colourisation: `Method.colour_space` "lab"), the L
  channel of normalised Lab (`ssltrace.augment`);
- per step and image: a translation by up to `jitter` pixels, a scaling by a factor in
  `scale`, a rotation by up to ± `rotation` degrees (one affine resampling, reflected at the
  border), drawn from a generator seeded with `seed`, as are the starting coefficients;
- objective: the channel's activation averaged over positions (a vector layer: the unit),
  all chosen channels of a layer optimised at once as one batch.

The network is the checkpoint's backbone (its `backbone.*` weights), in eval mode. Results
are cached per checkpoint and settings; the array `stimuli` holds [epoch, layer, channel,
size, size, 3] RGB in [0, 1], the table each channel's final response (`optimal_response`,
probe column `channelC`) and the response to a mid-grey image (`grey_response`) as baseline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Checkpoints, PerCheckpointAnalysis
from ssltrace.analysis.filters import chosen, first_conv
from ssltrace.analysis.probes import resolve_device
from ssltrace.augment import LAB_MEAN, LAB_STD, AugmentConfig, normalise, rgb_to_lab
from ssltrace.models import build_backbone


def backbone_from_checkpoint(checkpoint: dict) -> torch.nn.Module:
    """The checkpoint's backbone with its weights, in eval mode (input channels from its
    first convolution's weight)."""
    arch = dict(checkpoint["architecture"])
    in_channels = first_conv(checkpoint["state_dict"])[1].shape[1]
    backbone = build_backbone(arch.pop("name"), **arch, in_channels=int(in_channels))
    prefix = "backbone."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    backbone.load_state_dict(state)
    return backbone.eval()


def input_transform(checkpoint: dict, in_channels: int):
    """RGB in [0, 1] [B, 3, H, W] -> what the backbone takes (module docstring)."""
    config = AugmentConfig.from_dict(checkpoint.get("augment"))
    if in_channels == 3:
        return lambda rgb: normalise(rgb, torch.tensor(config.mean), torch.tensor(config.std))
    if in_channels == 1:
        return lambda rgb: normalise(
            rgb_to_lab(rgb), torch.tensor(LAB_MEAN), torch.tensor(LAB_STD)
        )[:, :1]
    raise ValueError(f"a backbone taking {in_channels} input channels has no image transform")


def fourier_scale(size: int) -> torch.Tensor:
    """1 / max(f, 1/size) over the rfft2 grid [size, size // 2 + 1], f in cycles/pixel."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.clamp(torch.sqrt(fx**2 + fy**2), min=1.0 / size)


def fourier_image(coeffs: torch.Tensor, scale: torch.Tensor, size: int) -> torch.Tensor:
    """RGB in [0, 1] [B, 3, size, size] from real coefficients [B, 3, size, size//2+1, 2]."""
    spectrum = torch.view_as_complex(coeffs) * scale
    return torch.sigmoid(torch.fft.irfft2(spectrum, s=(size, size), norm="ortho"))


def random_affine(
    images: torch.Tensor, jitter: float, scale: tuple, rotation: float, generator
) -> torch.Tensor:
    """Each image translated by up to `jitter` px, scaled by U(scale), rotated by up to
    ± `rotation` degrees: one bilinear resampling with reflection at the border."""
    b, _, h, _ = images.shape
    u = torch.rand(b, 4, generator=generator).to(
        images.device
    )  # drawn on the CPU: same on any device
    angle = torch.deg2rad((2 * u[:, 0] - 1) * rotation)
    factor = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    shift = (2 * u[:, 2:] - 1) * jitter * 2 / h  # pixels -> normalised coordinates
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def channel_response(output: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """Image b's response: its channel `channels[b]` averaged over positions [B]."""
    pooled = output.flatten(2).mean(dim=2) if output.ndim > 2 else output
    rows = torch.arange(len(channels), device=pooled.device)
    return pooled[rows, torch.tensor(channels, device=pooled.device)]


def optimal_stimuli(
    backbone: torch.nn.Module,
    to_input,
    layer: str,
    channels: list[int],
    size: int = 32,
    steps: int = 512,
    lr: float = 0.05,
    jitter: float = 2.0,
    scale: tuple = (0.9, 1.1),
    rotation: float = 10.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, size, size, 3] (RGB in [0, 1]) maximising each channel of `layer`, and
    each one's response to its image (unaugmented) [n]."""
    module = backbone.layer_modules()[layer]
    captured = {}
    hook = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    device = next(backbone.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    coeffs = 0.01 * torch.randn(len(channels), 3, size, size // 2 + 1, 2, generator=generator)
    coeffs = coeffs.to(device).requires_grad_(True)
    fscale = fourier_scale(size).to(device)
    optimiser = torch.optim.Adam([coeffs], lr=lr)
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            image = random_affine(
                fourier_image(coeffs, fscale, size), jitter, scale, rotation, generator
            )
            backbone(to_input(image))
            (-channel_response(captured["out"], channels).sum()).backward()
            optimiser.step()
        with torch.no_grad():
            image = fourier_image(coeffs, fscale, size)
            backbone(to_input(image))
            response = channel_response(captured["out"], channels)
    finally:
        hook.remove()
    return image.permute(0, 2, 3, 1).cpu().numpy(), response.cpu().numpy()


def grey_response(backbone, to_input, layer: str, channels: list[int], size: int) -> np.ndarray:
    """Each channel's response to a uniform mid-grey image (the baseline of the table)."""
    captured = {}
    module = backbone.layer_modules()[layer]
    hook = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    try:
        with torch.no_grad():
            device = next(backbone.parameters()).device
            backbone(to_input(torch.full((len(channels), 3, size, size), 0.5, device=device)))
            return channel_response(captured["out"], channels).cpu().numpy()
    finally:
        hook.remove()


def default_layers(names: list[str]) -> list[str]:
    """An intermediate layer and the last one of the backbone (ED Figs. 5 and 6)."""
    return list(dict.fromkeys([names[len(names) // 2], names[-1]]))


@ANALYSES.register("stimuli")
class Stimuli(PerCheckpointAnalysis):
    """Optimal stimuli of chosen channels at chosen epochs (seed 003 ED Figs. 5-6)."""

    name = "stimuli"
    summary = (
        "images maximising chosen channels, optimised in Fourier space with Adam and "
        "jitter/scale/rotation (seed 003 ED Figs. 5-6)"
    )
    inputs = {"checkpoints": Checkpoints()}
    arrays = ("stimuli",)
    stacked = "stimuli"
    sections = ("stimuli",)
    resources = {"mem_mb": 4000, "runtime": 60, "gpu": 1}

    def cache_settings(self):
        return {k: v for k, v in self.settings.items() if k != "epochs"}

    def chosen_epochs(self, job):
        epochs = self.settings["epochs"]
        return chosen(epochs, list(job.epochs), "stimuli.epochs") if epochs else [max(job.epochs)]

    def _layers(self, backbone) -> list[str]:
        names = list(backbone.layer_names)
        wanted = self.settings["layers"] or default_layers(names)
        missing = [layer for layer in wanted if layer not in names]
        if missing:
            raise ValueError(
                f"config key 'stimuli.layers': {missing[0]!r} is not a backbone layer; "
                f"backbone layers: {', '.join(names)}"
            )
        return wanted

    def epoch(self, checkpoint):
        s = self.settings
        device = resolve_device(s.get("device", "auto"))
        backbone = backbone_from_checkpoint(checkpoint).to(device)
        for p in backbone.parameters():
            p.requires_grad_(False)
        to_input = input_transform(checkpoint, first_conv(checkpoint["state_dict"])[1].shape[1])
        rows, images = [], []
        for layer in self._layers(backbone):
            channels = self._channels(backbone, layer)
            found, response = optimal_stimuli(
                backbone,
                to_input,
                layer,
                channels,
                s["size"],
                s["steps"],
                s["lr"],
                s["jitter"],
                tuple(s["scale"]),
                s["rotation"],
                s["seed"],
            )
            grey = grey_response(backbone, to_input, layer, channels, s["size"])
            for c, r, g in zip(channels, response, grey, strict=True):
                rows += [(layer, f"channel{c}", "optimal_response", float(r))]
                rows += [(layer, f"channel{c}", "grey_response", float(g))]
            images.append(found)
        arrays = {
            "stimuli": np.stack(images).astype(np.float32),
            "layers": np.array(self._layers(backbone)),
            "channels": np.array(self._channels(backbone, None)),
            "epoch": np.int64(checkpoint["epoch"]),
        }
        return rows, arrays

    def _channels(self, backbone, layer: str | None) -> list[int]:
        wanted = self.settings["channels"]
        channels = list(range(wanted)) if isinstance(wanted, int) else list(wanted)
        if layer is not None:
            width = _width(backbone, layer, self.settings["size"])
            too_big = [c for c in channels if c >= width]
            if too_big:
                raise ValueError(
                    f"config key 'stimuli.channels': channel {too_big[0]} does not exist in "
                    f"layer {layer!r} ({width} channels)"
                )
        return channels


def _width(backbone, layer: str, size: int) -> int:
    """Channels of `layer` (a probe forward on the meta device would do; this is one image)."""
    captured = {}
    module = backbone.layer_modules()[layer]
    hook = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    try:
        in_channels = first_conv({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
        device = next(backbone.parameters()).device
        with torch.no_grad():
            backbone(torch.zeros(1, in_channels[1].shape[1], size, size, device=device))
    finally:
        hook.remove()
    return int(captured["out"].shape[1])
