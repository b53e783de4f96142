"""The untrained baseline: a network at its random initialisation, never optimised.

`trains = False`: the engine writes only its epoch-0 checkpoint, which feeds the same
extraction and analyses as every trained run. Its head is SimCLR's (`proj_hidden_dim` null =
the backbone's out_dim, `proj_dim` 128) so a `head_fc1` layer exists to compare.
"""

from __future__ import annotations

from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("untrained")
class Untrained(Method):
    name = "untrained"
    trains = False
    defaults = {"proj_hidden_dim": None, "proj_dim": 128}

    positive = ("proj_dim",)

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.head = make_head(
            backbone.out_dim, self.params["proj_hidden_dim"], self.params["proj_dim"]
        )

    def loss(self, views, labels=None, index=None):
        raise RuntimeError("method 'untrained' has no loss: it is never trained")
