"""Optimisers: SGD, LARS, Adam and AdamW over a method's trainable parameters.

LARS follows the PyTorch LARS of BYOL/Barlow Twins (the form solo-learn uses): for a weight w
with gradient g, weight decay wd and trust coefficient eta,

    g' = g + wd w
    q  = eta ||w|| / ||g'||   (1 when either norm is 0)
    mu <- momentum mu + q g'
    w  <- w - lr mu

Biases and BatchNorm parameters (every tensor with ndim <= 1) are excluded from both the
adaptation (q = 1) and weight decay, as in SimCLR, BYOL and Barlow Twins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

OPTIMIZER_KEYS = {
    "sgd": {"lr", "momentum", "weight_decay", "nesterov"},
    "lars": {"lr", "momentum", "weight_decay", "eta"},
    "adam": {"lr", "betas", "weight_decay"},
    "adamw": {"lr", "betas", "weight_decay"},
}


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al., 2017) with momentum; see module docstring.

    Each param group may set `lars_adaptation` (default True) and its own `weight_decay`;
    `build_optimizer` puts biases and norm parameters in a group with neither.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_adaptation=True
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # speed: foreach ops, a few fused launches per group instead of ~8 per tensor.
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                updates = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            else:
                updates = [g.clone() for g in grads]
            if group["lars_adaptation"]:
                ratios = trust_ratios(params, updates, group["eta"])
                torch._foreach_mul_(updates, list(ratios.unbind(0)))
            momenta = []
            for p in params:
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                momenta.append(state["mu"])
            torch._foreach_mul_(momenta, group["momentum"])
            torch._foreach_add_(momenta, updates)
            torch._foreach_add_(params, momenta, alpha=-group["lr"])
        return loss


def trust_ratios(params: list[torch.Tensor], updates: list[torch.Tensor], eta: float):
    """eta ||w|| / ||update|| per tensor, 1 where either norm is 0 (kept on the device)."""
    w_norm = torch.stack(torch._foreach_norm(params))
    u_norm = torch.stack(torch._foreach_norm(updates))
    ratio = eta * w_norm / u_norm.clamp(min=torch.finfo(u_norm.dtype).tiny)
    return torch.where((w_norm > 0) & (u_norm > 0), ratio, torch.ones_like(w_norm))


def check_optimizer_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a `train.optimizer` mapping; errors name the key and the valid choices."""
    config = dict(config)
    name = config.get("name")
    if name not in OPTIMIZER_KEYS:
        raise ValueError(
            f"train.optimizer.name must be one of {', '.join(sorted(OPTIMIZER_KEYS))}, got {name!r}"
        )
    unknown = sorted(set(config) - OPTIMIZER_KEYS[name] - {"name"})
    if unknown:
        raise ValueError(
            f"train.optimizer {name!r} has no key {', '.join(map(repr, unknown))}; "
            f"valid keys: name, {', '.join(sorted(OPTIMIZER_KEYS[name]))}"
        )
    lr = config.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"train.optimizer.lr must be a number > 0, got {lr!r}")
    for key in ("momentum", "weight_decay", "eta"):
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"train.optimizer.{key} must be a number >= 0, got {value!r}")
    return config


def build_optimizer(
    model: nn.Module, config: Mapping[str, Any], device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """The optimiser named by `config["name"]` over `model`'s parameters that require grad."""
    config = check_optimizer_config(config)
    name, lr = config["name"], config["lr"]
    weight_decay = float(config.get("weight_decay", 0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused kernels: one launch per step for all parameters on CUDA.
    fused = torch.device(device).type == "cuda"
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=float(config.get("momentum", 0.9)),
            weight_decay=weight_decay,
            nesterov=bool(config.get("nesterov", False)),
            fused=fused or None,
        )
    if name == "lars":
        return LARS(
            split_decay_groups(params, weight_decay),
            lr=lr,
            momentum=float(config.get("momentum", 0.9)),
            weight_decay=weight_decay,
            eta=float(config.get("eta", 0.001)),
        )
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    betas = tuple(config.get("betas", (0.9, 0.999)))
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def split_decay_groups(params: Iterable[torch.Tensor], weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) get weight decay and LARS adaptation; biases and norm params neither."""
    params = list(params)
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {
            "params": [p for p in params if p.ndim <= 1],
            "weight_decay": 0.0,
            "lars_adaptation": False,
        },
    ]
    return [group for group in groups if group["params"]]
