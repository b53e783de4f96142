"""Self-supervised and supervised losses, one pure function per module.

Each function takes embeddings (and labels where needed) and returns a dict of scalar tensors
`loss`, `invariance`, `regularisation`: the two parts say how much of the objective pulls the
views of one image together and how much keeps the representation from collapsing (see each
module's docstring for the split). Nothing here holds state, so every loss is testable alone.
"""

from ssltrace.losses.barlow_twins import barlow_twins_loss
from ssltrace.losses.byol import byol_loss
from ssltrace.losses.cross_entropy import cross_entropy_loss
from ssltrace.losses.moco import moco_infonce_loss
from ssltrace.losses.nt_xent import nt_xent_loss
from ssltrace.losses.simsiam import simsiam_loss
from ssltrace.losses.vicreg import vicreg_loss

__all__ = [
    "barlow_twins_loss",
    "byol_loss",
    "cross_entropy_loss",
    "moco_infonce_loss",
    "nt_xent_loss",
    "simsiam_loss",
    "vicreg_loss",
]
