"""Neighbour structure of an embedding (seed paper 003, Fig. 1b–c).

Seed 003 (Zhuang et al. 2021, "Unsupervised neural network models of the ventral visual
stream") characterises what a contrastive objective does to the embedding with three
measures, all on cosine similarity:

- ranked similarities (Fig. 1b left): for each image, its cosine similarities to every other
  image, sorted in decreasing order; the sorted curves are averaged over images. A curve that
  stays high for the first ranks and then drops shows local clusters without global collapse;
- neighbour quality (Fig. 1b right): the share of an image's 10 nearest neighbours (most
  similar others) that carry its label, averaged over images;
- weighted kNN accuracy (Fig. 1c): the classifier of Wu et al. 2018 ("Unsupervised feature
  learning via non-parametric instance discrimination", §3.4): a query's K = 100 most similar
  memory-bank images vote for their class with weight exp(s / τ), τ = 0.07, s their cosine
  similarity; the class with the largest summed weight is the prediction.

All are exact: cosine similarities are matrix products of unit vectors, computed in chunks of
query rows (a [chunk, n] block at a time, never the n × n matrix) with torch on `device`
('auto' = CUDA when present). Ties in the vote go to the smaller class index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, layer_names
from ssltrace.analysis.probes import check_features, check_labels, resolve_device

DTYPES = {"float32": torch.float32, "float64": torch.float64}
NP_DTYPES = {"float32": np.float32, "float64": np.float64}


def unit_rows(x: np.ndarray | torch.Tensor, device, dtype=torch.float32) -> torch.Tensor:
    """Rows scaled to unit L2 norm (an all-zero row stays zero: similarity 0 to everything)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return F.normalize(t.to(device=device, dtype=dtype), dim=1, eps=1e-12)


def _check_chunk(chunk_size: int) -> int:
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _similarity_blocks(queries: torch.Tensor, bank: torch.Tensor, chunk_size: int, self_bank: bool):
    """(start, [c, n_bank] cosine block) per chunk of query rows; with `self_bank` (queries
    are the bank) each query's similarity to itself is set to -inf so it is never its own
    neighbour."""
    for start in range(0, queries.shape[0], chunk_size):
        block = queries[start : start + chunk_size] @ bank.T
        if self_bank:
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, rows + start] = -torch.inf
        yield start, block


def weighted_knn_predict(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    k: int = 100,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: str | torch.device = "auto",
    dtype: str = "float32",
) -> np.ndarray:
    """Labels predicted by the temperature-weighted kNN vote of Wu et al. 2018.

    Args:
        bank, bank_labels: memory bank features [n_bank, d] and their labels (any integers).
        queries: features [n_query, d] to classify.
        k: neighbours voting (the K most cosine-similar bank rows); at most n_bank.
        temperature: τ of the weights exp(s / τ).
        dtype: 'float32' (default, fast on GPUs) or 'float64' of the similarity products.

    Returns: the predicted label of each query, drawn from `bank_labels`.
    """
    torch_dtype = _dtype(dtype)
    bank_x = check_features(bank, "bank", NP_DTYPES[dtype])
    query_x = check_features(queries, "queries", NP_DTYPES[dtype])
    labels = check_labels(bank_labels, "bank_labels", bank_x.shape[0])
    _check_knn_args(k, temperature, bank_x.shape[0], bank_x.shape[1], query_x.shape[1])
    classes, codes = np.unique(labels, return_inverse=True)
    dev = resolve_device(device)
    bank_t = unit_rows(bank_x, dev, torch_dtype)
    codes_t = torch.from_numpy(codes.astype(np.int64)).to(dev)
    predictions = []
    for _, block in _similarity_blocks(
        unit_rows(query_x, dev, torch_dtype), bank_t, _check_chunk(chunk_size), False
    ):
        predictions.append(_vote(block, codes_t, len(classes), k, temperature))
    return classes[torch.cat(predictions).cpu().numpy()]


def _vote(block: torch.Tensor, codes: torch.Tensor, n_classes: int, k: int, tau: float):
    sims, idx = block.topk(k, dim=1)
    weights = torch.exp(sims / tau)
    votes = torch.zeros(block.shape[0], n_classes, dtype=block.dtype, device=block.device)
    votes.scatter_add_(1, codes[idx], weights)
    return votes.argmax(dim=1)  # first maximum: ties go to the smaller class index


def weighted_knn_accuracy(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    **options,
) -> float:
    """Share of queries whose weighted-kNN prediction (`weighted_knn_predict`) is their label."""
    labels = check_labels(query_labels, "query_labels", np.asarray(queries).shape[0])
    return float(np.mean(weighted_knn_predict(bank, bank_labels, queries, **options) == labels))


def neighbour_quality(
    features: np.ndarray,
    labels: np.ndarray,
    n_neighbours: int = 10,
    chunk_size: int = 1024,
    device: str | torch.device = "auto",
    dtype: str = "float32",
) -> float:
    """Mean over images of the share of its `n_neighbours` most cosine-similar other images
    that have its label (seed 003 Fig. 1b right: 10 neighbours)."""
    x = check_features(features, "features", NP_DTYPES[_name(dtype)])
    y = check_labels(labels, "labels", x.shape[0])
    if not isinstance(n_neighbours, (int, np.integer)) or not 1 <= n_neighbours < x.shape[0]:
        raise ValueError(
            f"n_neighbours must be an integer from 1 to {x.shape[0] - 1} (images - 1), "
            f"got {n_neighbours!r}"
        )
    dev = resolve_device(device)
    unit = unit_rows(x, dev, _dtype(dtype))
    _, codes = np.unique(y, return_inverse=True)
    codes_t = torch.from_numpy(codes.astype(np.int64)).to(dev)
    same = 0
    for start, block in _similarity_blocks(unit, unit, _check_chunk(chunk_size), True):
        idx = block.topk(int(n_neighbours), dim=1).indices
        own = codes_t[start : start + block.shape[0], None]
        same += int((codes_t[idx] == own).sum())
    return same / (x.shape[0] * n_neighbours)


def rank_grid(n_others: int, points: int) -> np.ndarray:
    """Ranks (1 = the most similar other image) at which a ranked curve is kept: all of
    1..n_others when they are at most `points`, else `points` log-spaced ranks (the curve
    changes fastest among the first neighbours), first and last included."""
    if n_others < 1:
        raise ValueError("ranked similarities need at least two images")
    if n_others <= points:
        return np.arange(1, n_others + 1)
    grid = np.unique(np.round(np.geomspace(1, n_others, points)).astype(np.int64))
    return grid


def ranked_similarities(
    features: np.ndarray,
    ranks: np.ndarray | None = None,
    chunk_size: int = 1024,
    device: str | torch.device = "auto",
    dtype: str = "float32",
) -> np.ndarray:
    """Mean over images of their cosine similarities to every other image, sorted in
    decreasing order (seed 003 Fig. 1b left); the value at rank r (1-based) is the mean
    similarity of each image's r-th most similar other image. `ranks` selects the ranks
    returned (default: all 1..n-1)."""
    x = check_features(features, "features", NP_DTYPES[_name(dtype)])
    n = x.shape[0]
    ranks = np.arange(1, n) if ranks is None else np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0 or ranks.min() < 1 or ranks.max() > n - 1:
        raise ValueError(f"ranks must be a 1-D array of ranks from 1 to {n - 1}")
    dev = resolve_device(device)
    unit = unit_rows(x, dev, _dtype(dtype))
    total = torch.zeros(n - 1, dtype=torch.float64, device=dev)
    for _, block in _similarity_blocks(unit, unit, _check_chunk(chunk_size), True):
        ordered = block.sort(dim=1, descending=True).values[:, : n - 1]  # -inf (self) last
        total += ordered.sum(dim=0, dtype=torch.float64)
    return (total / n).cpu().numpy()[ranks - 1]


def neighbour_profile(
    features: np.ndarray,
    labels: np.ndarray,
    n_neighbours: int = 10,
    ranks: np.ndarray | None = None,
    chunk_size: int = 1024,
    device: str | torch.device = "auto",
    dtype: str = "float32",
) -> tuple[float, np.ndarray]:
    """(`neighbour_quality`, `ranked_similarities`) from one pass over the similarity blocks:
    each block is sorted once, its order giving the nearest neighbours and its values the
    ranked curve (half the matrix products of calling both)."""
    x = check_features(features, "features", NP_DTYPES[_name(dtype)])
    y = check_labels(labels, "labels", x.shape[0])
    n = x.shape[0]
    if not isinstance(n_neighbours, (int, np.integer)) or not 1 <= n_neighbours < n:
        raise ValueError(f"n_neighbours must be an integer from 1 to {n - 1}, got {n_neighbours!r}")
    ranks = np.arange(1, n) if ranks is None else np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0 or ranks.min() < 1 or ranks.max() > n - 1:
        raise ValueError(f"ranks must be a 1-D array of ranks from 1 to {n - 1}")
    dev = resolve_device(device)
    unit = unit_rows(x, dev, _dtype(dtype))
    codes = torch.from_numpy(np.unique(y, return_inverse=True)[1].astype(np.int64)).to(dev)
    total, same = torch.zeros(n - 1, dtype=torch.float64, device=dev), 0
    for start, block in _similarity_blocks(unit, unit, _check_chunk(chunk_size), True):
        ordered = block.sort(dim=1, descending=True)  # self (-inf) last
        total += ordered.values[:, : n - 1].sum(dim=0, dtype=torch.float64)
        own = codes[start : start + block.shape[0], None]
        same += int((codes[ordered.indices[:, :n_neighbours]] == own).sum())
    return same / (n * n_neighbours), (total / n).cpu().numpy()[ranks - 1]


@dataclass(frozen=True)
class NeighbourMeasures:
    """What one pass over an embedding's similarities gives (`neighbour_measures`)."""

    knn_accuracy: float  # weighted kNN (Wu et al. 2018) of the queries from the bank
    quality: float  # share of each image's nearest others with its label
    ranked: np.ndarray | None  # mean ranked similarity at the asked ranks (None: not asked)


def neighbour_measures(
    features: np.ndarray,
    labels: np.ndarray,
    bank: np.ndarray,
    queries: np.ndarray,
    k: int = 100,
    temperature: float = 0.07,
    n_neighbours: int = 10,
    ranks: np.ndarray | None = None,
    chunk_size: int = 2048,
    device: str | torch.device = "auto",
    dtype: str = "float32",
) -> NeighbourMeasures:
    """Weighted kNN accuracy, neighbour quality and (with `ranks`) the ranked-similarity
    curve of one embedding from one set of similarity products.

    The kNN similarities (queries x bank) are a block of the all-images similarity matrix that
    neighbour quality needs anyway, so both come from one product per chunk: images are
    reordered bank first, queries next, so that block is a slice. Without `ranks` only the
    upper triangle of the symmetric matrix is computed ([c, c] blocks, each updating the
    running top-k of its rows and, transposed, of its columns): half the products, which
    dominate (measured ~2x at 10,000 images x 512 dims on 2 CPU threads). The ranked curve
    needs whole rows sorted, so with `ranks` whole row chunks are used and sorted with numpy on
    the CPU (its SIMD sort, measured 26x faster than torch's on [1024, 10000] float32 blocks).

    Args:
        features, labels: [n, d] features and [n] labels of every image.
        bank, queries: boolean masks [n] of the kNN memory bank and the images it classifies
            (disjoint); neighbour quality and the ranked curve use every image.
        k, temperature: K neighbours voting with weight exp(s / temperature).
        n_neighbours: neighbours of the quality measure (seed 003: 10).
        ranks: ranks (1 = most similar other image) of the curve returned, None: no curve.
    """
    x = check_features(features, "features", NP_DTYPES[_name(dtype)])
    y = check_labels(labels, "labels", x.shape[0])
    bank, queries = _masks(bank, queries, x.shape[0])
    n = x.shape[0]
    n_bank, n_query = int(bank.sum()), int(queries.sum())
    _check_knn_args(k, temperature, n_bank, x.shape[1], x.shape[1])
    if not isinstance(n_neighbours, (int, np.integer)) or not 1 <= n_neighbours < n:
        raise ValueError(f"n_neighbours must be an integer from 1 to {n - 1}, got {n_neighbours!r}")
    if ranks is not None:
        ranks = np.asarray(ranks, dtype=np.int64)
        if ranks.ndim != 1 or ranks.size == 0 or ranks.min() < 1 or ranks.max() > n - 1:
            raise ValueError(f"ranks must be a 1-D array of ranks from 1 to {n - 1}")
    order = np.concatenate([np.flatnonzero(bank), np.flatnonzero(queries)])
    order = np.concatenate([order, np.flatnonzero(~(bank | queries))])
    dev = resolve_device(device)
    unit = unit_rows(x[order], dev, _dtype(dtype))
    codes = torch.from_numpy(np.unique(y, return_inverse=True)[1][order].astype(np.int64)).to(dev)
    state = _TopK(n, n_bank, n_query, k, int(n_neighbours), unit.dtype, dev)
    chunk = _check_chunk(chunk_size)
    if ranks is None:
        _upper_triangle(unit, state, chunk)
        ranked = None
    else:
        ranked = _row_chunks(unit, state, chunk)[ranks - 1]
    return NeighbourMeasures(*state.results(codes, temperature), ranked)


def _masks(bank, queries, n: int) -> tuple[np.ndarray, np.ndarray]:
    bank, queries = np.asarray(bank, dtype=bool), np.asarray(queries, dtype=bool)
    if bank.shape != (n,) or queries.shape != (n,):
        raise ValueError(f"bank and queries must be boolean masks of the {n} images")
    if (bank & queries).any() or not queries.any():
        raise ValueError("bank and queries must be disjoint, with at least one query")
    return bank, queries


class _TopK:
    """Running top-k of rows over the column blocks seen so far: the `n_neighbours` most
    similar other images of every image, and the k most similar bank images of every query
    (rows ordered bank, queries, rest; see `neighbour_measures`)."""

    def __init__(self, n, n_bank, n_query, k, n_neighbours, dtype, device):
        self.n_bank, self.n_query, self.k, self.nq = n_bank, n_query, k, n_neighbours
        self.q_vals = torch.full((n, n_neighbours), -torch.inf, dtype=dtype, device=device)
        self.q_idx = torch.zeros((n, n_neighbours), dtype=torch.int64, device=device)
        self.k_vals = torch.full((n_query, k), -torch.inf, dtype=dtype, device=device)
        self.k_idx = torch.zeros((n_query, k), dtype=torch.int64, device=device)

    def update(self, row0: int, col0: int, block: torch.Tensor) -> None:
        """Merge a block of similarities (rows row0.., columns col0..) into the state."""
        rows = slice(row0, row0 + block.shape[0])
        _merge(self.q_vals, self.q_idx, rows, block, col0, self.nq)
        q0, q1 = max(row0, self.n_bank), min(rows.stop, self.n_bank + self.n_query)
        c1 = min(col0 + block.shape[1], self.n_bank)
        if q0 < q1 and col0 < c1:  # queries among the rows, bank images among the columns
            sub = block[q0 - row0 : q1 - row0, : c1 - col0]
            span = slice(q0 - self.n_bank, q1 - self.n_bank)
            _merge(self.k_vals, self.k_idx, span, sub, col0, self.k)

    def results(self, codes: torch.Tensor, temperature: float) -> tuple[float, float]:
        weights = torch.exp(self.k_vals / temperature)
        votes = torch.zeros(self.n_query, int(codes.max()) + 1, dtype=weights.dtype)
        votes = votes.to(weights.device).scatter_add_(1, codes[self.k_idx], weights)
        truth = codes[self.n_bank : self.n_bank + self.n_query]
        knn = float((votes.argmax(dim=1) == truth).double().mean())  # ties: smaller class
        quality = int((codes[self.q_idx] == codes[:, None]).sum()) / self.q_idx.numel()
        return knn, quality


def _merge(vals, idx, rows: slice, block: torch.Tensor, col0: int, k: int) -> None:
    """vals/idx[rows] <- the top k of their current entries and the block's rows."""
    top = block.topk(min(k, block.shape[1]), dim=1)
    both = torch.cat([vals[rows], top.values], dim=1).topk(k, dim=1)
    vals[rows] = both.values
    idx[rows] = torch.cat([idx[rows], top.indices + col0], dim=1).gather(1, both.indices)


def _upper_triangle(unit: torch.Tensor, state: _TopK, chunk: int) -> None:
    """Every [chunk, chunk] block on and above the diagonal of unit @ unit.T, once."""
    n = unit.shape[0]
    for i in range(0, n, chunk):
        for j in range(i, n, chunk):
            block = unit[i : i + chunk] @ unit[j : j + chunk].T
            if i == j:
                block.fill_diagonal_(-torch.inf)  # never one's own neighbour
            state.update(i, j, block)
            if j > i:  # top-k along contiguous rows: copy + topk measured 2.4x faster
                state.update(j, i, block.T.contiguous())


def _row_chunks(unit: torch.Tensor, state: _TopK, chunk: int) -> np.ndarray:
    """Whole rows of unit @ unit.T, chunk by chunk: the top-k state and the mean ranked
    similarity curve (ranks 1..n-1)."""
    n = unit.shape[0]
    total = np.zeros(n - 1)
    for start, block in _similarity_blocks(unit, unit, chunk, True):
        state.update(start, 0, block)
        total += _sorted_sum(block, n)
    return total / n


def _sorted_sum(block: torch.Tensor, n: int) -> np.ndarray:
    """Column sums of the block's rows sorted in decreasing order, self (-inf) left out."""
    if block.device.type == "cpu":
        ordered = np.sort(block.numpy(), axis=1)[:, ::-1]  # numpy's SIMD sort
        return ordered[:, : n - 1].sum(axis=0, dtype=np.float64)
    ordered = block.sort(dim=1, descending=True).values[:, : n - 1]
    return ordered.sum(dim=0, dtype=torch.float64).cpu().numpy()


def _name(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype


def _dtype(dtype: str) -> torch.dtype:
    return DTYPES[_name(dtype)]


def _check_knn_args(k, temperature, n_bank: int, d_bank: int, d_query: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_bank:
        raise ValueError(f"k must be an integer from 1 to {n_bank} (the bank size), got {k!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if d_bank != d_query:
        raise ValueError(
            f"bank and queries must have the same number of features: {d_bank} vs {d_query}"
        )


@ANALYSES.register("neighbours")
class Neighbours(PerEpochAnalysis):
    """Neighbour structure (seed 003 Fig. 1b–c) per epoch and layer of the known-class probe.

    kNN: the probe's train part (`part` 0) is the memory bank, its test part (`part` 1) the
    queries. Neighbour quality and ranked similarities: every image of the probe (both parts)
    against all the others. Labels are the fine classes (probe column `fine`). The ranked
    curve is stored at `rank_grid` ranks, stacked over epochs: ranked [epoch, layer, rank].
    """

    name = "neighbours"
    summary = (
        "ranked cosine similarities, 10-neighbour label quality and weighted kNN (K=100, "
        "tau=0.07) accuracy (seed 003 Fig. 1b-c)"
    )
    inputs = {"known": Activations("known")}
    arrays = ("ranked",)
    stacked = "ranked"
    sections = ("neighbours",)
    resources = {"mem_mb": 8000, "runtime": 60, "gpu": 1}

    def cache_settings(self):
        keys = ("k", "temperature", "quality_neighbours", "ranked_points", "dtype")
        return {key: self.settings[key] for key in keys}

    def _options(self) -> dict:
        return {
            "chunk_size": self.settings.get("chunk_size", 2048),
            "device": self.settings.get("device", "auto"),
            "dtype": self.settings["dtype"],
        }

    def epoch(self, role, acts):
        train, test = acts["part"] == 0, acts["part"] == 1
        labels, layers, s = acts["labels"], layer_names(acts), self.settings
        ranks = rank_grid(labels.size - 1, s["ranked_points"])
        rows, curves = [], []
        for layer in layers:
            found = neighbour_measures(
                acts[layer],
                labels,
                train,
                test,
                k=s["k"],
                temperature=s["temperature"],
                n_neighbours=s["quality_neighbours"],
                ranks=ranks,
                **self._options(),
            )
            rows += [(layer, "fine", "knn_accuracy", found.knn_accuracy)]
            rows += [(layer, "fine", "neighbour_quality", found.quality)]
            curves.append(found.ranked)
        arrays = {"ranked": np.stack(curves), "layers": np.array(layers), "ranks": ranks}
        return rows, arrays
