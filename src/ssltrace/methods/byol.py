"""BYOL (Grill et al., 2020): an online network predicts an EMA target network's projections.

The target (`target_backbone`, `target_head`) is a frozen copy updated after every step as
target <- tau target + (1 - tau) online, with tau following BYOL's cosine schedule from
`base_momentum` (0.99) to `final_momentum` (1.0) over training; equal values give a constant
tau. Projector `proj_hidden_dim` 4096 -> `proj_dim` 256 and predictor `pred_hidden_dim` 4096
are the paper's sizes.
"""

from __future__ import annotations

import torch

from ssltrace.losses import byol_loss
from ssltrace.methods.base import METHODS, MomentumMethod, forward_views, make_head


@METHODS.register("byol")
class BYOL(MomentumMethod):
    name = "byol"
    defaults = {
        "proj_hidden_dim": 4096,
        "proj_dim": 256,
        "pred_hidden_dim": 4096,
        "base_momentum": 0.99,
        "final_momentum": 1.0,
    }

    positive = ("proj_hidden_dim", "proj_dim", "pred_hidden_dim")
    momentum_pairs = (("target_backbone", "backbone"), ("target_head", "head"))

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self.predictor = make_head(p["proj_dim"], p["pred_hidden_dim"], p["proj_dim"])
        self.make_targets()

    def loss(self, views, labels=None, index=None):
        z = self.embed_views(views, self.head)
        q1, q2 = self.predictor(z).float().chunk(2)
        with torch.no_grad():
            t1, t2 = forward_views(views, self.target_backbone, self.target_head).chunk(2)
        return byol_loss(q1, q2, t1, t2)
