"""SimCLR (Chen et al., 2020): two views, a projection head, NT-Xent against in-batch negatives.

Parameters: `temperature` (0.5, the paper's CIFAR-10 value), `proj_hidden_dim` (null = the
backbone's out_dim, as in the paper) and `proj_dim` (128).
"""

from __future__ import annotations

from ssltrace.distributed import gather
from ssltrace.losses import nt_xent_loss
from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("simclr")
class SimCLR(Method):
    name = "simclr"
    defaults = {"temperature": 0.5, "proj_hidden_dim": None, "proj_dim": 128}

    positive = ("temperature", "proj_dim")

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])

    def loss(self, views, labels=None, index=None):
        z1, z2 = self.embed_views(views, self.head).chunk(2)
        # Negatives from the global batch when data-parallel (identity in one process).
        return nt_xent_loss(gather(z1), gather(z2), self.params["temperature"])
