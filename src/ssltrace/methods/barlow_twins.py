"""Barlow Twins (Zbontar et al., 2021): drive the views' cross-correlation matrix to identity.

Parameters: `lambd` (5e-3, the paper's off-diagonal weight), `proj_hidden_dim` (null =
backbone out_dim) and `proj_dim` (2048).
"""

from __future__ import annotations

from ssltrace.distributed import gather
from ssltrace.losses import barlow_twins_loss
from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("barlow_twins")
class BarlowTwins(Method):
    name = "barlow_twins"
    defaults = {"lambd": 5e-3, "proj_hidden_dim": None, "proj_dim": 2048}

    positive = ("lambd", "proj_dim")

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.head = make_head(
            backbone.out_dim, self.params["proj_hidden_dim"], self.params["proj_dim"]
        )

    def loss(self, views, labels=None, index=None):
        z1, z2 = self.embed_views(views, self.head).chunk(2)
        # Cross-correlation of the global batch when data-parallel.
        return barlow_twins_loss(gather(z1), gather(z2), self.params["lambd"])
