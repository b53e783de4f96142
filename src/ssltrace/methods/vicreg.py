"""VICReg (Bardes, Ponce & LeCun, 2022): invariance + variance + covariance on the embeddings.

Parameters: `sim_coeff` lambda (25), `std_coeff` mu (25), `cov_coeff` nu (1), the paper's
defaults; `variance` "sum" (mu [v(Z) + v(Z')], the papers' Eq.; seed 004 Eq. 1) or "mean"
(the authors' code, (v(Z) + v(Z')) / 2); `proj_hidden_dim` (null = backbone out_dim) and
`proj_dim` (2048).
"""

from __future__ import annotations

from ssltrace.distributed import gather
from ssltrace.losses import vicreg_loss
from ssltrace.losses.vicreg import VARIANCE_TERMS
from ssltrace.methods.base import METHODS, Method, make_head


@METHODS.register("vicreg")
class VICReg(Method):
    name = "vicreg"
    defaults = {
        "sim_coeff": 25.0,
        "std_coeff": 25.0,
        "cov_coeff": 1.0,
        "proj_hidden_dim": None,
        "proj_dim": 2048,
        "variance": "sum",
    }

    positive = ("proj_dim",)
    non_negative = ("sim_coeff", "std_coeff", "cov_coeff")

    @classmethod
    def resolve(cls, params):
        resolved = super().resolve(params)
        if resolved["variance"] not in VARIANCE_TERMS:
            raise ValueError(
                f"method_params 'variance' of 'vicreg' must be one of "
                f"{', '.join(VARIANCE_TERMS)}, got {resolved['variance']!r}"
            )
        return resolved

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])

    def loss(self, views, labels=None, index=None):
        z1, z2 = self.embed_views(views, self.head).chunk(2)
        p = self.params
        coefficients = (p["sim_coeff"], p["std_coeff"], p["cov_coeff"])
        # Variance and covariance of the global batch when data-parallel.
        return vicreg_loss(gather(z1), gather(z2), *coefficients, variance=p["variance"])
