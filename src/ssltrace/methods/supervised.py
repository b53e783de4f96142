"""Supervised baseline: cross-entropy on the known fine classes.

One augmented view per image (`n_views = 1`), the standard supervised recipe: a second view
would only double the cost of the same objective. The head is the shared MLPHead with
`n_classes` outputs (hidden width `hidden_dim`, null = the backbone's out_dim), so the
classifier has a `head_fc1` layer like the self-supervised heads. The loss has no
invariance/regularisation split: both are logged as NaN.
"""

from __future__ import annotations

from ssltrace.losses import cross_entropy_loss
from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("supervised")
class Supervised(Method):
    name = "supervised"
    n_views = 1
    uses_labels = True
    defaults = {"hidden_dim": None}

    positive = ("hidden_dim",)

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.head = make_head(backbone.out_dim, self.params["hidden_dim"], n_classes)

    def loss(self, views, labels=None, index=None):
        if labels is None:
            raise ValueError("method 'supervised' needs labels, got None")
        return cross_entropy_loss(self.embed_views(views, self.head), labels)
