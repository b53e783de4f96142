"""The memory bank of Instance Recognition and Local Aggregation, and their shared base class.

The bank (Wu et al., 2018, §3.1; Zhuang et al., 2019, use Wu et al.'s) holds one
l2-normalised entry per training image, [n, proj_dim]. It starts as random unit vectors:
uniform in [-1/sqrt(d/3), 1/sqrt(d/3)] as in lemniscate.pytorch, then l2-normalised as in
LocalAggregation-Pytorch. After every optimiser step the entries of the batch's images move
towards the step's embeddings v by a running average and are renormalised,

    V_i <- normalise(m V_i + (1 - m) v_i),   m = `bank_momentum` (0.5, both papers),

with no gradient through the bank. The update waits for `after_step` because the step's
backward still reads the bank the loss was computed against. With several processes
(ssltrace.training.ddp) every process gathers every rank's (index, v) and applies the same
update, so the banks stay identical and equal to one process's bank on the whole batch; Wu et
al.'s Z is estimated on each rank's first batch and averaged over ranks, which is Z of the
global first batch (equal shares).

The bank is a non-persistent buffer: it is not in the per-epoch checkpoints (which analyses
read and which must stay small) but in `training_state()`, the resume file, together with
the NCE normaliser Z; a resumed run restores both and ends bit-identical.

`MemoryBankMethod` is what both methods share: one augmented view per image (`n_views = 1`,
as in both papers), the head, the bank, and the Instance Recognition loss (`instance_loss`:
full softmax over the bank by default, `nce_negatives` > 0 for Wu et al.'s NCE with that
many noise entries per image). The head is by default the project's MLPHead to `proj_dim` =
128 (fc1 -> ReLU -> BN -> fc2, as every other method's, so that `head_fc1` is the same kind
of layer across methods); `linear_head: true` is the papers' head, one linear layer to
`proj_dim`, which is then `head_fc1` itself (and there is no `head_fc2`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssltrace.distributed import gather_detached, mean_
from ssltrace.losses.instance import instance_nce_loss, instance_softmax_loss, nce_normaliser
from ssltrace.methods.base import Method, make_head


def random_entries(n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` random unit vectors [n, dim]: lemniscate's uniform init, l2-normalised."""
    bound = 1 / math.sqrt(dim / 3)
    uniform = torch.rand(n, dim, generator=generator)
    return F.normalize(uniform * (2 * bound) - bound, dim=1)


def running_average(old: torch.Tensor, new: torch.Tensor, momentum: float) -> torch.Tensor:
    """normalise(momentum * old + (1 - momentum) * normalise(new)), row by row."""
    return F.normalize(momentum * old + (1 - momentum) * F.normalize(new, dim=1), dim=1)


class MemoryBank(nn.Module):
    """One l2-normalised `dim`-vector per training image in `entries` [n, dim]."""

    def __init__(self, dim: int):
        super().__init__()
        # Not persistent: kept out of the checkpoints; the resume file carries it instead.
        self.register_buffer("entries", torch.empty(0, dim), persistent=False)

    def __len__(self) -> int:
        return self.entries.shape[0]

    def reset_(self, n: int, generator: torch.Generator | None = None) -> None:
        """Fresh random unit entries for `n` images (on the CPU; `.to()` moves them)."""
        self.entries = random_entries(n, self.entries.shape[1], generator).to(self.entries)

    @torch.no_grad()
    def update_(self, index: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
        """Running average of the rows `index` towards `embeddings` (no gradient)."""
        old = self.entries[index]
        new = running_average(old, embeddings.detach().to(old.dtype), momentum)
        self.entries.index_copy_(0, index, new)

    def load_(self, entries: torch.Tensor) -> None:
        if tuple(entries.shape) != tuple(self.entries.shape):
            raise ValueError(
                f"saved memory bank has shape {tuple(entries.shape)}, this run's is "
                f"{tuple(self.entries.shape)} (the training set or proj_dim changed)"
            )
        self.entries.copy_(entries)


class LinearHead(nn.Module):
    """Wu et al.'s and Zhuang et al.'s head: one linear layer, named `fc1` for extraction."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(x)


class MemoryBankMethod(Method):
    """Base of Instance Recognition and Local Aggregation (see the module docstring)."""

    n_views = 1
    defaults: dict[str, Any] = {
        "temperature": 0.07,
        "bank_momentum": 0.5,
        "nce_negatives": 0,
        "proj_hidden_dim": None,
        "proj_dim": 128,
        "linear_head": False,
    }
    positive = ("temperature", "proj_hidden_dim", "proj_dim")
    non_negative = ("nce_negatives",)
    unit_interval = ("bank_momentum",)

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        if p["linear_head"]:
            self.head = LinearHead(backbone.out_dim, p["proj_dim"])
        else:
            self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self.memory_bank = MemoryBank(p["proj_dim"])
        # Wu et al.'s NCE normaliser Z; -1 until estimated on the first batch (as lemniscate).
        self.register_buffer("nce_z", torch.tensor(-1.0), persistent=False)
        self._z_known = False  # mirrors nce_z > 0 without reading the device every step
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def check_training_set(cls, params: dict[str, Any], n_images: int, colour: bool) -> None:
        require_at_most(cls.name, params, "nce_negatives", n_images)

    def setup(self, n_images: int) -> None:
        self.memory_bank.reset_(n_images)

    def embed(self, views: list[torch.Tensor], index: torch.Tensor | None) -> torch.Tensor:
        """The l2-normalised embeddings of the one view; they update the bank after the step."""
        if index is None:
            raise ValueError(
                f"{self.name} needs the batch's positions in the training set (index), got None"
            )
        if len(self.memory_bank) == 0:
            raise RuntimeError(f"{self.name}: the memory bank is empty; call setup(n_images)")
        v = F.normalize(self.embed_views(views, self.head), dim=1)
        self._pending = (index, v.detach())
        return v

    def instance_loss(self, v: torch.Tensor, index: torch.Tensor) -> dict:
        """Wu et al.'s loss: full softmax over the bank, or NCE with `nce_negatives` noise."""
        bank, temperature = self.memory_bank.entries, self.params["temperature"]
        m = self.params["nce_negatives"]
        # The bank logits stay in float32 under bf16 autocast: s / 0.07 spans ±14.
        with torch.autocast(v.device.type, enabled=False):
            if m == 0:
                return instance_softmax_loss(v, bank, index, temperature)
            # Uniform noise P_n = 1/n from the device's global generator (resume restores it).
            noise = torch.randint(len(bank), (len(v), m), device=v.device)
            if not self._z_known:
                self.nce_z.copy_(nce_normaliser(v, bank, index, noise, temperature))
                mean_(self.nce_z)  # the global batch's estimate: the same Z on every rank
                self._z_known = True
            return instance_nce_loss(v, bank, index, noise, self.nce_z, temperature)

    def after_step(self, progress: float) -> None:
        if self._pending is not None:
            index, v = (gather_detached(x) for x in self._pending)  # every rank's batch
            self.memory_bank.update_(index, v, self.params["bank_momentum"])
            self._pending = None

    def training_state(self) -> dict[str, torch.Tensor]:
        return {"memory_bank": self.memory_bank.entries, "nce_z": self.nce_z}

    def load_training_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = {"memory_bank", "nce_z"} - set(state)
        if missing:
            raise ValueError(f"{self.name} training state lacks {', '.join(sorted(missing))}")
        self.memory_bank.load_(state["memory_bank"])
        self.nce_z.copy_(state["nce_z"])
        self._z_known = bool(self.nce_z > 0)


def require_at_most(method: str, params: Mapping[str, Any], key: str, n_images: int) -> None:
    """params[key] (None: derived from the data) must not exceed the training images."""
    value = params[key]
    if value is not None and value > n_images:
        raise ValueError(
            f"method_params {key!r} of {method!r} must be at most the number of training "
            f"images ({n_images}), got {value}"
        )
