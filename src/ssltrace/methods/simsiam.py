"""SimSiam (Chen & He, 2021): projector + predictor, stop-gradient, symmetrised negative cosine.

Parameters: `proj_hidden_dim` (null = backbone out_dim), `proj_dim` (2048), `pred_hidden_dim`
(512, the paper's bottleneck) and `stop_gradient` (true; false is the paper's collapsing
ablation, Fig. 2). The projector is the shared MLPHead (no BatchNorm on its output, unlike the
paper's 3-layer projector; their Table 4 shows SimSiam still learns without it).
"""

from __future__ import annotations

from ssltrace.losses import simsiam_loss
from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("simsiam")
class SimSiam(Method):
    name = "simsiam"
    defaults = {
        "proj_hidden_dim": None,
        "proj_dim": 2048,
        "pred_hidden_dim": 512,
        "stop_gradient": True,
    }

    positive = ("proj_dim", "pred_hidden_dim")

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self.predictor = make_head(p["proj_dim"], p["pred_hidden_dim"], p["proj_dim"])

    def loss(self, views, labels=None, index=None):
        z = self.embed_views(views, self.head)
        p1, p2 = self.predictor(z).float().chunk(2)
        z1, z2 = z.chunk(2)
        return simsiam_loss(p1, p2, z1, z2, stop_gradient=self.params["stop_gradient"])
