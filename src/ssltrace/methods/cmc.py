"""CMC (Tian, Krishnan & Isola, 2019): contrastive multiview coding of L and ab channels.

One augmented view per image (the study's `augment` acts on RGB), converted to Lab and
normalised as CMC's code does (`colour_space = "lab"`, ssltrace.augment). Its two "views" are
the channels (the paper's ImageNet experiment, "L and ab"): the analysed `backbone` sees L
(`in_channels = 1`), a sibling `ab_backbone` (the same architecture with 2 input channels)
sees ab; each has its own 128-d head and the embeddings are l2-normalised. Extraction
(`probe_forward`) runs the L network on the L channel of the probe images, as seed 003
analyses the L-ResNet-18. CMC's code augments with crop and flip only: colour jitter changes
both channels of a view alike, but random grayscale leaves that image's ab view constant, so a
CMC study should set `grayscale_p: 0`.

Objective (`objective`; formulas, and the invariance/regularisation split, in
ssltrace.losses.cmc): both directions L -> ab and ab -> L summed ("Contrastive learning with
two views"), each

- `nce` (default; "Implementing the contrastive loss", CMC's NCEAverage/NCECriterion): NCE
  against two memory banks of the training set's L and ab embeddings, `negatives` (K) rows
  drawn uniformly per anchor, a normalising constant Z per direction set from the first batch
  and kept;
- `softmax`: cross-entropy over the same K+1 bank rows (the code's `--softmax`);
- `in_batch`: InfoNCE against the other images of the batch (no banks), the SimCLR-style form.

Invariance is the attraction of each anchor to its own image's other-view embedding (bank entry
or batch partner), regularisation the repulsion from the negatives (NCE's noise term, or the
log-sum-exp). The batch's bank rows become m row + (1 - m) v, renormalised, with
m = `bank_momentum` (0.5 as CMC's nce_m) and v the embeddings the loss scored; CMC writes them
in the forward pass, here after the optimiser step (`after_step`), with the same values.

Banks start as CMC's do (uniform in +-1/sqrt(D/3), from the run's seed). They and Z are
non-persistent buffers, kept in the resume state (`training_state`), not in checkpoints; negatives
are drawn from the global torch RNG (on the banks' device), whose state the engine restores.
With several processes (ssltrace.training.ddp) every rank writes every rank's batch into its
banks after the step (identical banks), and Z is the mean over ranks of their first-batch
estimates, i.e. the global first batch's.

Parameters: `temperature` 0.07 (CMC's nce_t), `negatives` null = min(4096, n - 1) for n
training images (4096: Wu et al.'s NCE m, which CMC's NCE inherits; CMC's ImageNet code uses
16384 of 1.28M images), `proj_hidden_dim`/`proj_dim` as the other methods. Deliberate
differences, each for the project's shared contract: the heads are the shared MLPHead (CMC
embeds with one linear layer) so that `head_fc1` is extracted as for every method; both
backbones have the study's architecture at full width (CMC's ResNets halve each network's
width; seed 003 uses two full ResNet-18s).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssltrace.distributed import gather_detached, is_distributed, mean_
from ssltrace.losses.cmc import OBJECTIVES, cmc_bank_loss, cmc_in_batch_loss, update_bank_
from ssltrace.methods.base import METHODS, Method, make_head

DEFAULT_NEGATIVES = 4096


@METHODS.register("cmc")
class CMC(Method):
    name = "cmc"
    n_views = 1
    colour_space = "lab"
    in_channels = 1  # the analysed backbone takes L
    defaults = {
        "objective": "nce",
        "temperature": 0.07,
        "negatives": None,
        "bank_momentum": 0.5,
        "proj_hidden_dim": None,
        "proj_dim": 128,
    }

    positive = ("temperature", "negatives", "proj_dim")
    unit_interval = ("bank_momentum",)

    @classmethod
    def resolve(cls, params):
        resolved = super().resolve(params)
        if resolved["objective"] not in OBJECTIVES:
            raise ValueError(
                f"method_params 'objective' of 'cmc' must be one of {', '.join(OBJECTIVES)}, "
                f"got {resolved['objective']!r}"
            )
        return resolved

    @classmethod
    def check_training_set(cls, params, n_images, colour):
        if not colour:
            raise ValueError(
                "method 'cmc' needs a colour dataset: it contrasts the L and ab channels, and the "
                "ab channels of grey images are constant (this dataset has colour: false)"
            )
        if params["objective"] == "in_batch":
            return
        limit = n_images - 1
        if params["negatives"] is not None and params["negatives"] > limit:
            raise ValueError(
                f"method_params 'negatives' of 'cmc' = {params['negatives']}: at most "
                f"{limit} (the other images of the {n_images} training images in the banks)"
            )
        if limit < 1:
            raise ValueError(f"method 'cmc' needs at least 2 training images, got {n_images}")

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        from ssltrace.models import build_backbone

        if getattr(backbone, "spec", {}).get("in_channels") != 1:
            raise ValueError(
                "cmc's analysed backbone takes the L channel: build it with in_channels=1 "
                "(ssltrace.network.build_network does)"
            )
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self.ab_backbone = build_backbone(**{**backbone.spec, "in_channels": 2})
        self.ab_head = make_head(self.ab_backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self._pending: tuple[torch.Tensor, ...] | None = None  # bank rows to write after a step
        self._z_shared = False  # several processes: Z averaged over ranks once

    @property
    def uses_banks(self) -> bool:
        return self.params["objective"] != "in_batch"

    def setup(self, n_images: int) -> None:
        """Allocate the memory banks (one row per training image) as CMC's NCEAverage does."""
        if not self.uses_banks:
            return
        self.check_training_set(self.params, n_images, colour=True)
        dim = self.params["proj_dim"]
        bound = 1.0 / math.sqrt(dim / 3)
        device = self.head.fc1.weight.device
        for name in ("memory_l", "memory_ab"):
            bank = torch.rand(n_images, dim, device=device).mul_(2 * bound).sub_(bound)
            self.register_buffer(name, bank, persistent=False)
        # Z of the directions L -> ab and ab -> L; negative until the first batch sets them.
        self.register_buffer("nce_z", torch.full((2,), -1.0, device=device), persistent=False)
        self.n_negatives = self.params["negatives"] or min(DEFAULT_NEGATIVES, n_images - 1)

    def training_state(self) -> dict[str, torch.Tensor]:
        if not hasattr(self, "memory_l"):  # in_batch, or setup not yet called
            return {}
        return {"memory_l": self.memory_l, "memory_ab": self.memory_ab, "nce_z": self.nce_z}

    def load_training_state(self, state) -> None:
        for name, value in self.training_state().items():
            if name not in state or state[name].shape != value.shape:
                got = tuple(state[name].shape) if name in state else "nothing"
                raise ValueError(
                    f"cmc resume state: {name} must be {tuple(value.shape)}, got {got}"
                )
            value.copy_(state[name])

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The L network on the L channel of Lab input [B, 3, H, W]."""
        return self.head(self.backbone(x[:, :1]))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """l2-normalised float32 embeddings of the L and ab channels of Lab input x."""
        v_l = self.head(self.backbone(x[:, :1])).float()
        v_ab = self.ab_head(self.ab_backbone(x[:, 1:])).float()
        return F.normalize(v_l, dim=1), F.normalize(v_ab, dim=1)

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        v_l, v_ab = self.embed(views[0])
        # The contrast itself in float32: NCE divides exp(s / 0.07) by a constant of order n.
        with torch.autocast(v_l.device.type, enabled=False):
            if not self.uses_banks:
                return cmc_in_batch_loss(v_l, v_ab, self.params["temperature"])
            return self._bank_loss(v_l, v_ab, self._check_index(index, len(v_l)))

    def _bank_loss(self, v_l, v_ab, index):
        p = self.params
        n_images = self.memory_l.shape[0]
        # CMC's AliasMethod over uniform weights: K + 1 draws per anchor, column 0 its own row.
        sample = torch.randint(n_images, (len(index), self.n_negatives + 1), device=index.device)
        sample[:, 0] = index
        if p["objective"] == "nce" and is_distributed() and not self._z_shared:
            self._share_normalisers(v_l, v_ab, sample)
        out = cmc_bank_loss(
            v_l, v_ab, self.memory_l, self.memory_ab, sample, p["temperature"], p["objective"],
            self.nce_z,
        )  # fmt: skip
        # The banks are written after the optimiser step: backward still reads them.
        self._pending = (index, v_l.detach(), v_ab.detach())
        return out

    @torch.no_grad()
    def _share_normalisers(self, v_l, v_ab, sample) -> None:
        """Set unset Z from this rank's first batch, averaged over ranks (set ones stay)."""
        local = self.nce_z.clone()
        args = (self.memory_l, self.memory_ab, sample, self.params["temperature"], "nce")
        cmc_bank_loss(v_l.detach(), v_ab.detach(), *args, local)
        self.nce_z.copy_(mean_(local))
        self._z_shared = True

    def after_step(self, progress: float) -> None:
        if self._pending is not None:
            index, v_l, v_ab = (gather_detached(x) for x in self._pending)  # every rank's
            update_bank_(self.memory_l, index, v_l, self.params["bank_momentum"])
            update_bank_(self.memory_ab, index, v_ab, self.params["bank_momentum"])
            self._pending = None

    def _check_index(self, index, batch: int) -> torch.Tensor:
        if not hasattr(self, "memory_l"):
            raise RuntimeError("cmc: call setup(n_images) before training (it allocates the banks)")
        if not isinstance(index, torch.Tensor) or index.shape != (batch,):
            got = tuple(index.shape) if isinstance(index, torch.Tensor) else repr(index)
            raise ValueError(
                f"cmc's memory banks need the batch's positions in the training set (index, "
                f"[{batch}]), got {got}; objective 'in_batch' needs none"
            )
        return index.to(self.memory_l.device, torch.long)
