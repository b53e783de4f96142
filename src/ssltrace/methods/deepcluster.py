"""DeepCluster (Caron, Bojanowski, Joulin & Douze, 2018): a classifier on per-epoch k-means labels.

The whole training set is re-clustered every epoch and the clusters are the classes.

Architecture. The paper's network (§3.4; AlexNet/VGG in the reference code) is a fixed Sobel
filter -> conv `features` -> `classifier` MLP (fc6, ReLU, fc7) -> ReLU -> `top_layer` (k
outputs). Here:

    sobel                               grey = mean of the (normalised) RGB channels, then
                                        the two 3x3 Sobel gradients: fixed, not trained
    backbone                            the conv features (the analysed network), taking the
                                        2 gradient channels (`in_channels = 2`)
    head = MLPHead: fc1-ReLU-BN-fc2     the classifier MLP: fc1 = fc6 (extracted as head_fc1),
                                        fc2 = fc7; `hidden_dim` and `feature_dim` wide; kept
                                        from epoch to epoch, as in the paper
    ReLU -> top_layer (k outputs)       re-created at every clustering

`probe_forward` runs the Sobel filter too, so extraction feeds the backbone what training did.
The paper's reason for the filter (§3.4: remove colour, increase local contrast) shows on the
synthetic data, whose colours are random per image: without it the clusters follow colour
(seed 1, 600 images: NMI with the fine classes stayed near 0.05 over 15 epochs), with it they
rose to about 0.25. `sobel: false` feeds the backbone RGB like every other method (a backbone with
3 input channels is built in its place), for comparisons that hold the input fixed.

Every epoch (`before_epoch`, §3.2-3.4):
1. embed every training image un-augmented (the paper clusters central crops; a 32x32 image is
   its own centre crop) in eval mode without gradients, in chunks: the head's output before the
   final ReLU, which the reference code removes while it computes the features;
2. PCA-reduce to `pca_dim` dimensions (the paper's 256), whiten and l2-normalise (the code's
   faiss PCAMatrix(eigen_power=-0.5)); `pca_whiten` is checked against scikit-learn's
   PCA(whiten=True);
3. k-means into `k` clusters with `ssltrace.kmeans` (`kmeans_iterations` = 20 Lloyd steps as
   the code's faiss call; empty clusters re-seeded from a perturbed copy of a non-empty
   centroid, §3.3 "Avoiding trivial solutions"); the cluster of each image is its pseudo-label;
4. re-initialise the top layer as the code does (weights N(0, 0.01^2), bias 0) and drop its
   optimiser state, so no momentum from the previous clustering's arbitrary cluster numbering
   leaks into the new one. The optimiser holds the top layer from construction (the engine
   builds it once): it is re-drawn in place, never replaced.

`epoch_order` samples the epoch's N images uniformly over the non-empty clusters (§3.3; the
code's UnifLabelSampler: N // clusters + 1 images from each, with replacement only when a
cluster has no more images than that, shuffled and cut to N), so a huge cluster cannot
dominate the classifier. Training sees one augmented view per image (`n_views = 1`); the loss
is `ssltrace.losses.deepcluster.deepcluster_loss` (eq. 1): cross-entropy = invariance,
regularisation = 0 (the paper's guards against collapse are the two devices above, not a loss
term).

k (`k: null`) scales with the training set: round(N / 128), at least 10, at most N. 128 images
per cluster is the paper's 10,000 clusters for ImageNet's 1.28M images, which worked better
than k = 1,000 = the number of classes: "some amount of over-segmentation is beneficial"
(§4.1, choosing the number of clusters). CIFAR-100's 25,000 known-class images give k = 195,
about four clusters per fine class.

State. The pseudo-labels are a non-persistent buffer returned by `training_state` (they are
recomputed from the restored weights at the next epoch's start in any case, which makes a
resumed run bit-identical). The top layer is not part of `state_dict()`: it is re-drawn before
it is used, so checkpoints stay the network that extraction rebuilds without `setup` (the
reference code, too, drops `top_layer` from its checkpoints on resume).

Deliberate differences from the paper, fixed by the parts every method shares:
- the MLP is the shared MLPHead (BatchNorm after fc6) instead of AlexNet's dropout MLP: every
  method's head_fc1 is extracted from the same kind of head;
- the top layer is trained by the run's optimiser (with its momentum, reset at each
  re-creation), as the engine builds one optimiser for all parameters; the code gives it a
  separate SGD without momentum;
- k-means starts from k-means++ (ssltrace.kmeans) instead of faiss's random sample of points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssltrace import distributed
from ssltrace.kmeans import kmeans
from ssltrace.losses.deepcluster import deepcluster_loss
from ssltrace.methods.base import METHODS, EpochContext, Method, forward_views, make_head
from ssltrace.models import build_backbone

# The paper's 10,000 clusters for ImageNet's 1,281,167 training images (§3.4, §4.1).
IMAGES_PER_CLUSTER = 128
# Smallest default k: tiny training sets are still over-segmented (§4.1).
MIN_CLUSTERS = 10
# Relative floor added to the eigenvalues before whitening: guards a rank-deficient feature
# matrix (dead units) against division by zero, negligible otherwise.
_EIGEN_FLOOR = 1e-12


@METHODS.register("deepcluster")
class DeepCluster(Method):
    name = "deepcluster"
    n_views = 1
    in_channels = 2  # the Sobel gradients (`sobel: false`: 3, see __init__)
    defaults = {
        "sobel": True,
        "k": None,
        "pca_dim": 256,
        "hidden_dim": 512,
        "feature_dim": 512,
        "kmeans_iterations": 20,
    }

    positive = ("k", "pca_dim", "hidden_dim", "feature_dim", "kmeans_iterations")

    @classmethod
    def resolve(cls, params):
        """Ranges of the base class, then k >= 2 and pca_dim <= the features' rank."""
        p = super().resolve(params)
        if p["k"] is not None and p["k"] < 2:
            raise ValueError(
                f"method_params 'k' of 'deepcluster' must be >= 2 (k-means needs two "
                f"clusters), got {p['k']!r}"
            )
        rank = min(p["hidden_dim"], p["feature_dim"])
        if p["pca_dim"] > rank:
            raise ValueError(
                f"method_params 'pca_dim' of 'deepcluster' must be <= hidden_dim and "
                f"feature_dim ({rank}, the rank of the clustered features), got {p['pca_dim']}"
            )
        return p

    @classmethod
    def check_training_set(cls, params, n_images, colour):
        """k and pca_dim must fit the number of training images."""
        n_clusters(params["k"], n_images)
        if params["pca_dim"] > n_images - 1:
            raise ValueError(
                f"method_params 'pca_dim' of 'deepcluster' must be <= {n_images - 1} (the "
                f"{n_images} training images minus one bound the rank of the centred "
                f"features), got {params['pca_dim']}"
            )

    def __init__(self, backbone, params, n_classes):
        channels = 2 if self.resolve(params)["sobel"] else 3
        spec = getattr(backbone, "spec", None)
        if spec is not None and spec.get("in_channels", 3) != channels:
            # A backbone built for the other input (build_network reads the class attribute).
            backbone = build_backbone(**{**spec, "in_channels": channels})
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.sobel = SobelFilter() if p["sobel"] else nn.Identity()
        self.head = make_head(backbone.out_dim, p["hidden_dim"], p["feature_dim"])
        self.relu = nn.ReLU()
        self.top_layer: EpochClassifier | None = None  # made by setup: k depends on N
        self.k: int | None = None
        self._clustered = False
        self.clustering: dict[str, float] = {}  # the last k-means: inertia, empty clusters

    def setup(self, n_images: int) -> None:
        self.check_training_set(self.params, n_images, colour=True)
        self.k = n_clusters(self.params["k"], n_images)
        # skip_init: no draw from the global RNG; before_epoch draws the weights.
        self.top_layer = nn.utils.skip_init(EpochClassifier, self.params["feature_dim"], self.k)
        nn.init.zeros_(self.top_layer.weight)
        nn.init.zeros_(self.top_layer.bias)
        labels = torch.zeros(n_images, dtype=torch.long)
        self.register_buffer("pseudo_labels", labels, persistent=False)

    def loss(self, views, labels=None, index=None):
        if not self._clustered:
            raise RuntimeError(
                "method 'deepcluster' has no pseudo-labels yet: setup(n_images) and "
                "before_epoch(ctx) must run before loss"
            )
        if index is None:
            raise ValueError("method 'deepcluster' needs the batch's training-set index")
        self.check_views(views)
        logits = forward_views(
            views, self.sobel, self.backbone, self.head, self.relu, self.top_layer
        )
        return deepcluster_loss(logits, self.pseudo_labels[index])

    @torch.no_grad()
    def before_epoch(self, ctx: EpochContext) -> None:
        """Cluster the training set and re-create the top layer (see the module docstring)."""
        if self.top_layer is None:
            raise RuntimeError("method 'deepcluster': call setup(n_images) before training")
        features = self.embed_sharded(ctx.images, ctx.plain, ctx.batch_size)
        x = preprocess_features(features, self.params["pca_dim"])
        result = kmeans(x, self.k, ctx.generator, self.params["kmeans_iterations"])
        self.pseudo_labels.copy_(result.labels)
        self._clustered = True
        self.reset_top_layer(ctx.generator, ctx.optimizer)
        self.clustering = {"inertia": result.inertia, "empty_fixed": result.n_empty_fixed}

    def epoch_order(self, ctx: EpochContext) -> torch.Tensor:
        return balanced_order(self.pseudo_labels, self.k, ctx.generator)

    def embed_sharded(self, images: torch.Tensor, plain, chunk: int) -> torch.Tensor:
        """`embed` of every image; with W processes each embeds a contiguous 1/W of the set
        and the shares are gathered, so every rank clusters the same features."""
        if not distributed.is_distributed():
            return self.embed(images, plain, chunk)
        world, rank, n = distributed.world_size(), distributed.rank(), len(images)
        share = -(-n // world)
        rows = torch.arange(rank * share, (rank + 1) * share, device=images.device)
        # the last share padded with repeats of the last image: all_gather needs equal sizes
        features = self.embed(images[rows.clamp_max(n - 1)], plain, chunk)
        return distributed.gather_detached(features)[:n]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, plain, chunk: int) -> torch.Tensor:
        """Head outputs (pre-ReLU) of uint8 `images` [N, H, W, 3], eval mode, `chunk` at a
        time; the last chunk is padded to full size so a compiled backbone sees one shape."""
        was_training = self.training
        self.eval()
        memory_format = input_memory_format(self.backbone)
        out = []
        try:
            for start in range(0, len(images), chunk):
                rows = torch.arange(start, start + chunk, device=images.device)
                x = plain(images[rows.clamp_max(len(images) - 1)])
                x = x.contiguous(memory_format=memory_format)
                out.append(self.probe_forward(x).float()[: len(images) - start])
        finally:
            self.train(was_training)
        return torch.cat(out)

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The clustered features: Sobel, backbone, head (before the final ReLU)."""
        return self.head(self.backbone(self.sobel(x)))

    def reset_top_layer(self, generator: torch.Generator, optimizer) -> None:
        """Re-draw the top layer in place (the code's init) and forget its optimiser state."""
        with torch.no_grad():
            self.top_layer.weight.normal_(0.0, 0.01, generator=generator)
            self.top_layer.bias.zero_()
        for p in self.top_layer.parameters():
            optimizer.state.pop(p, None)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {"pseudo_labels": self.pseudo_labels} if self.top_layer is not None else {}

    def load_training_state(self, state) -> None:
        if "pseudo_labels" in state:
            self.pseudo_labels.copy_(state["pseudo_labels"])
            self._clustered = True


class SobelFilter(nn.Module):
    """The reference code's fixed input filter: the mean of the three channels, then the
    horizontal and vertical 3x3 Sobel kernels (padding 1): [B, 3, H, W] -> [B, 2, H, W]."""

    def __init__(self):
        super().__init__()
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        kernels = torch.stack([gx, gx.T])[:, None]  # [2, 1, 3, 3]
        self.register_buffer("kernels", kernels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.mean(dim=1, keepdim=True), self.kernels.to(x.dtype), padding=1)


class EpochClassifier(nn.Linear):
    """DeepCluster's top layer: re-drawn at every clustering, so it is no part of the saved
    network (state dicts neither hold nor expect it)."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass

    def _load_from_state_dict(self, state_dict, prefix, *args):
        pass


def n_clusters(k: int | None, n_images: int) -> int:
    """k itself, or the default round(N / 128) clamped to [10, N]; errors name 'k'."""
    if n_images < 2:
        raise ValueError(f"method 'deepcluster' needs at least 2 training images, got {n_images}")
    if k is None:
        return min(n_images, max(MIN_CLUSTERS, round(n_images / IMAGES_PER_CLUSTER)))
    if k > n_images:
        raise ValueError(
            f"method_params 'k' of 'deepcluster' must be <= the {n_images} training images "
            f"(one cluster needs an image), got {k}"
        )
    return k


def pca_whiten(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The centred rows of `x` [n, d] on their top `dim` principal axes, each axis scaled to
    unit variance (scikit-learn's PCA(whiten=True); faiss PCAMatrix(eigen_power=-0.5)).

    Computed on x's device from the covariance's eigendecomposition in float64; each axis is
    signed so that its largest-magnitude entry is positive (scikit-learn's svd_flip).
    """
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [n, d], got {tuple(x.shape)}")
    n, d = x.shape
    if not 1 <= dim <= min(d, n - 1):
        raise ValueError(
            f"pca_dim must be in [1, {min(d, n - 1)}] (features {d}, rows - 1 = {n - 1}), got {dim}"
        )
    centred = x.double() - x.double().mean(dim=0)
    eigenvalues, axes = torch.linalg.eigh(centred.T @ centred / (n - 1))
    eigenvalues, axes = eigenvalues.flip(0)[:dim], axes.flip(1)[:, :dim]  # largest first
    peaks = axes.abs().argmax(dim=0)
    axes = axes * torch.sign(axes[peaks, torch.arange(dim, device=x.device)])
    floor = _EIGEN_FLOOR * eigenvalues[0].clamp_min(torch.finfo(torch.float64).tiny)
    scale = (eigenvalues.clamp_min(0) + floor).rsqrt()
    return (centred @ (axes * scale)).to(x.dtype)


def preprocess_features(x: torch.Tensor, dim: int) -> torch.Tensor:
    """PCA-whitened to `dim` and l2-normalised (§3.4; the code's `preprocess_features`)."""
    return F.normalize(pca_whiten(x, dim), dim=1)


def balanced_order(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """N = len(labels) indices drawn uniformly over the non-empty clusters (§3.3; the code's
    UnifLabelSampler): N // clusters + 1 from each cluster, without replacement when it has
    more images than that and with replacement otherwise, then shuffled and cut to N."""
    n, device = len(labels), labels.device
    counts = torch.bincount(labels, minlength=k)
    filled = torch.nonzero(counts).flatten()
    per_cluster = n // len(filled) + 1
    # Indices grouped by cluster, each group in random order: a group's first m entries are
    # m draws without replacement.
    keys = labels.double() + torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    grouped = torch.argsort(keys, stable=True)
    sizes = counts[filled]
    starts = (torch.cumsum(counts, 0) - counts)[filled]
    draws = torch.rand(
        len(filled), per_cluster, generator=generator, device=device, dtype=torch.float64
    )
    with_replacement = (draws * sizes[:, None]).long().clamp_max(sizes[:, None] - 1)
    first = torch.arange(per_cluster, device=device).expand(len(filled), -1)
    offsets = torch.where((sizes > per_cluster)[:, None], first, with_replacement)
    picks = grouped[(starts[:, None] + offsets).flatten()]
    shuffle = torch.randperm(len(picks), generator=generator, device=device)
    return picks[shuffle][:n]


def input_memory_format(module: nn.Module) -> torch.memory_format:
    """channels_last when the module's first convolution weight is, else contiguous: the
    embedding pass feeds images laid out as training does."""
    for p in module.parameters():
        if p.ndim == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return torch.channels_last
            break
    return torch.contiguous_format
