"""What every method shares: parameter validation, the projection head, momentum updates,
and the hooks through which the training engine and extraction talk to a method.

A method is an `nn.Module` built as `cls(backbone, params, n_classes)`. It holds `backbone`,
`head` (an `MLPHead` whose first layer `head.fc1` the extraction hooks) and whatever else it
needs as submodules or buffers, so `state_dict()` carries EMA targets and queues into
checkpoints. The engine, per run:

    setup(n_images)            once, before epoch 0 is saved (allocate memory banks)
    load_training_state(s)     on resume: what `training_state()` returned at that epoch
    per epoch:  before_epoch(ctx); order = epoch_order(ctx)   (None: a seeded permutation)
      per step: loss(views, labels, index) -> {"loss", "invariance", "regularisation"}
                backward, optimiser step, after_step(progress)
    training_state()           saved with each epoch's resume state (not in checkpoints)

`index` holds the batch's positions in the training set (memory banks). Extraction runs
`probe_forward(x)` on the probe images converted by the Augmenter to `colour_space`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ssltrace.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


class Method(nn.Module):
    """Base class: subclasses set `name`, `defaults` and implement `loss`."""

    name: ClassVar[str] = ""
    n_views: ClassVar[int] = 2
    uses_labels: ClassVar[bool] = False
    # Accepts a labelled subset (method_settings.<name>.labels): label -1 = unlabelled.
    label_subset: ClassVar[bool] = False
    # Trains on per-pixel depth: the dataset must have it; loss(..., depth=[maps per view]).
    needs_depth: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    # Parameter ranges, checked by `resolve` (config validation) before any model is built.
    positive: ClassVar[tuple[str, ...]] = ()  # > 0 (None passes: a default width)
    non_negative: ClassVar[tuple[str, ...]] = ()
    unit_interval: ClassVar[tuple[str, ...]] = ()  # in [0, 1] (momentum coefficients)
    # Layers of the method's own modules that extraction reads after the backbone's: the
    # head's first layer and its output (`head.fc2`, the vector the loss sees; seed 000
    # analyses "all layers" including it). Heads without an `fc2` list only head_fc1.
    head_layers: ClassVar[tuple[str, ...]] = ("head_fc1", "head_fc2")
    # Input of the analysed backbone: the Augmenter's colour space and its channels.
    colour_space: ClassVar[str] = "rgb"
    in_channels: ClassVar[int] = 3

    @classmethod
    def resolve(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overridden by `params`, with key, type and range errors naming the key."""
        resolved = resolve_params(cls.name, cls.defaults, params)
        require_positive(cls.name, resolved, *cls.positive)
        require_non_negative(cls.name, resolved, *cls.non_negative)
        require_unit_interval(cls.name, resolved, *cls.unit_interval)
        return resolved

    @classmethod
    def check_training_set(cls, params: dict[str, Any], n_images: int, colour: bool) -> None:
        """Refuse settings the training set cannot satisfy (a bank or k larger than the number
        of images, a colour method on grey images): ValueError naming the parameter. Runs at
        config check time (`snakemake -n`) with the resolved `params`."""

    def __init__(self, backbone: nn.Module, params: Mapping[str, Any] | None, n_classes: int):
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.params = self.resolve(params)
        self.n_classes = n_classes
        self.backbone = backbone

    def loss(
        self,
        views: list[torch.Tensor],
        labels: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> dict:
        raise NotImplementedError

    def layer_modules(self) -> dict[str, nn.Module]:
        """Every extracted layer's module (its forward output is the activation), in order."""
        heads = {"head_fc1": self.head.fc1, "head_fc2": getattr(self.head, "fc2", None)}
        return {
            **self.backbone.layer_modules(),
            **{name: heads[name] for name in self.head_layers if heads[name] is not None},
        }

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass extraction runs (its hooks capture the layers)."""
        return self.head(self.backbone(x))

    def setup(self, n_images: int) -> None:
        """Called once before training with the number of training images."""

    def before_epoch(self, ctx: EpochContext) -> None:
        """Called before each training epoch (recompute clusters, neighbours, ...)."""

    def epoch_order(self, ctx: EpochContext) -> torch.Tensor | None:
        """This epoch's order of training images (None: the engine's seeded permutation)."""
        return None

    def training_state(self) -> dict[str, torch.Tensor]:
        """State that training needs to resume but analyses do not (memory banks, cluster
        assignments): saved with each epoch's resume state, not in the checkpoints."""
        return {}

    def load_training_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what `training_state` returned."""

    def after_step(self, progress: float) -> None:
        """Called after every optimiser step with progress = step / total steps in [0, 1)."""

    @property
    def uses_progress(self) -> bool:
        """True when training depends on the total number of steps (a momentum schedule)."""
        return False

    def embed_views(self, views: list[torch.Tensor], *modules: nn.Module) -> torch.Tensor:
        """Run all views through backbone then `modules` as ONE batch, returned as float32.

        One forward over the concatenated views halves the kernel launches per step; the
        BatchNorm statistics are then those of all views together.
        """
        self.check_views(views)
        return forward_views(views, self.backbone, *modules)

    def check_views(self, views: list[torch.Tensor]) -> None:
        if not isinstance(views, (list, tuple)) or len(views) != self.n_views:
            got = len(views) if isinstance(views, (list, tuple)) else type(views).__name__
            raise ValueError(f"{self.name} takes views as a list of {self.n_views}, got {got}")


@dataclass
class EpochContext:
    """What `before_epoch` / `epoch_order` may use: the whole training set on the device."""

    epoch: int
    images: torch.Tensor  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # int64 [N]
    plain: Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> network input, unaugmented
    generator: torch.Generator  # on the device, seeded from (run seed, epoch)
    optimizer: torch.optim.Optimizer
    batch_size: int


class MomentumMethod(Method):
    """A method with momentum-updated (EMA) copies of some of its modules (BYOL, MoCo).

    Subclasses list `momentum_pairs` = ((target attribute, online attribute), ...) and call
    `make_targets()` once their online modules exist. After every optimiser step each target
    moves towards its online module with momentum tau on BYOL's cosine schedule from
    `base_momentum` to `final_momentum` (equal values: a constant tau), as solo-learn's
    momentum base does for BYOL, MoCo and their kin.
    """

    momentum_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()
    unit_interval = ("base_momentum", "final_momentum")

    def make_targets(self) -> None:
        for target, online in self.momentum_pairs:
            setattr(self, target, frozen_copy(getattr(self, online)))

    @property
    def uses_progress(self) -> bool:
        return self.params["base_momentum"] != self.params["final_momentum"]

    def momentum(self, progress: float) -> float:
        return cosine_momentum(
            self.params["base_momentum"], self.params["final_momentum"], progress
        )

    def after_step(self, progress: float) -> None:
        tau = self.momentum(progress)
        for target, online in self.momentum_pairs:
            ema_update_(getattr(self, target), getattr(self, online), tau)


def forward_views(views: list[torch.Tensor], *modules: nn.Module) -> torch.Tensor:
    """torch.cat(views) through `modules` in turn, as float32 (losses stay out of bf16)."""
    out = torch.cat(list(views))
    for module in modules:
        out = module(out)
    return out.float()


def resolve_params(
    method: str, defaults: Mapping[str, Any], params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults overridden by `params`; an unknown key or a wrongly typed value is an error."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise TypeError(
            f"method_params for {method!r} must be a mapping, got {type(params).__name__}"
        )
    valid = ", ".join(sorted(defaults)) or "none"
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(
                f"unknown method_params key {key!r} for method {method!r}; valid keys: {valid}"
            )
        _check_type(method, key, value, defaults[key])
    return {**defaults, **params}


def _check_type(method: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "a boolean"
    elif default is None:
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
        expected = "a positive int or null"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an int"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok, expected = isinstance(value, type(default)), type(default).__name__
    if not ok:
        raise ValueError(f"method_params {key!r} of {method!r} must be {expected}, got {value!r}")


def require_positive(method: str, params: Mapping[str, Any], *keys: str) -> None:
    """Each of `keys` must be > 0 (None passes: it means a default width)."""
    for key in keys:
        value = params[key]
        if value is not None and not value > 0:
            raise ValueError(f"method_params {key!r} of {method!r} must be > 0, got {value!r}")


def require_non_negative(method: str, params: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if not params[key] >= 0:
            raise ValueError(
                f"method_params {key!r} of {method!r} must be >= 0, got {params[key]!r}"
            )


def require_unit_interval(method: str, params: Mapping[str, Any], *keys: str) -> None:
    """Each of `keys` must lie in [0, 1] (momentum coefficients)."""
    for key in keys:
        if not 0 <= params[key] <= 1:
            raise ValueError(
                f"method_params {key!r} of {method!r} must be in [0, 1], got {params[key]!r}"
            )


def make_head(in_dim: int, hidden_dim: int | None, out_dim: int) -> nn.Module:
    """The shared MLPHead: fc1 -> ReLU -> BatchNorm1d -> fc2; hidden None = in_dim."""
    from ssltrace.models.heads import MLPHead

    return MLPHead(in_dim, hidden_dim or in_dim, out_dim)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` that the optimiser never sees (EMA target / momentum encoder)."""
    import copy

    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: tau = final - (final - base) (cos(pi progress) + 1) / 2."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau target + (1 - tau) online, for every parameter (BYOL eq. 1)."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    # foreach: one fused kernel per op for all parameters instead of one per tensor.
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, online_params, alpha=1 - tau)
