"""Procedural texture datasets: the offline stand-ins for CIFAR-100 and CIFAR-10 + CIFAR-10H.

`synthetic` has CIFAR-100's shape: 20 coarse classes x 5 fine classes of 32x32 RGB images.
A coarse class is one texture generator (stripes, checker, rings, ...) and its five fine
classes are five values of one secondary parameter of that generator (stripe duty cycle, cell
aspect ratio, number of spiral arms, ...). The textures fill the whole image, so a random
resized crop down to 8% of the area still shows several repeats of the coarse-class structure,
while the fine differences are smaller and partly scale-dependent, as they are between fine
classes of one CIFAR-100 superclass. Per image, the two colours (a lighter foreground on a
darker background, luminance gap >= 0.25), position, scale (period 4.5..5.5 px) and the
fine-parameter jitter are random, so colour carries no class information and the structure
survives grayscale conversion.

What varies is chosen so that a CPU minute of SimCLR shows learning (tests/test_validation.py).
Textures are upright, as CIFAR photographs are: no standard SSL augmentation teaches rotation
invariance, so random orientations were an instance cue that SimCLR learned instead of the
texture. A random per-image pixel-noise level is such a cue too (crops and colour jitter
leave it intact): with it, the same SimCLR run gained no few-shot clustering MI on seed 0.
What remains (colour, position, scale) is what SimCLR's colour jitter and crops remove. An
earlier version with random rotations, contrast polarity, colour ramps and noise levels gave
SimCLR no measurable gain in fine-class NCC or few-shot clustering MI at CPU scale.

The human-comparison set (`human_set`) has 10 further classes in 5 pairs; the two classes of a
pair are the two ends of one generator's parameter range. Each image gets an ambiguity u in
[0, 1] that moves its parameter towards the pair's midpoint, and its simulated human answers
are drawn from a multinomial over ~50 annotators whose probabilities follow u, so that their
expectation is exactly `synthetic_reference_confusion()`. Image-level human uncertainty is
thereby tied to image content, as in CIFAR-10H.

Each dataset image comes with a depth map (`train_depth`, `test_depth`, float16 [N, 32, 32]):
the foreground pattern is a layer in front of a tilted background plane (`_depth`), for seed
003's depth-prediction task.

Everything is rendered with numpy, one batch of images per class: at 2x supersampling where
edges have corners or crossings, directly at 32x32 where they come from exact distances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

SIZE = 32
_SS = 2  # supersampling factor: patterns are drawn at 64x64 and averaged down (anti-aliasing)
_CHUNK = 250  # images per random stream; output does not depend on memory or batch size


def _sample_grid(ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample-centre coordinates (x along columns) in output pixels, ss samples per pixel."""
    px = (np.arange(SIZE * ss, dtype=np.float32) + 0.5) / ss
    return tuple(np.meshgrid(px, px))


_GRIDS = {ss: _sample_grid(ss) for ss in (1, _SS)}
# frequencies of the real-FFT grid used for noise envelopes, in cycles per output pixel
_FX, _FY = np.meshgrid(
    np.fft.rfftfreq(SIZE * _SS, d=1.0 / _SS).astype(np.float32),
    np.fft.fftfreq(SIZE * _SS, d=1.0 / _SS).astype(np.float32),
)


@dataclass
class Frame:
    """Per-image geometry of one batch: coordinates in output pixels around a random centre."""

    u: np.ndarray  # [n, S, S] (S = 32 * samples per pixel) along x, the pattern's axis
    v: np.ndarray  # [n, S, S] along y
    period: np.ndarray  # [n, 1, 1] base period in output pixels (random scale)
    rng: np.random.Generator

    @property
    def n(self) -> int:
        return self.u.shape[0]

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        return np.hypot(self.u, self.v), np.arctan2(self.v, self.u)

    @property
    def ss(self) -> int:
        """Samples per output pixel along each axis (1: drawn directly at 32x32)."""
        return self.u.shape[-1] // SIZE


def _frame(rng: np.random.Generator, n: int, period_range: tuple[float, float], ss: int) -> Frame:
    cx, cy = (rng.uniform(2, SIZE - 2, (2, n, 1, 1))).astype(np.float32)
    lo, hi = np.log(period_range)
    period = np.exp(rng.uniform(lo, hi, (n, 1, 1))).astype(np.float32)
    x, y = _GRIDS[ss]
    # Not rotated: upright, like CIFAR photographs (see the module docstring).
    return Frame(u=x - cx, v=y - cy, period=period, rng=rng)


# ----------------------------------------------------------------------------- primitives
def _soft(t: np.ndarray, ss: int = _SS) -> np.ndarray:
    """1 inside, 0 outside, for a signed distance `t` in output pixels; the ramp is one sample
    wide (a box-filtered edge), so shapes drawn from exact distances need no supersampling."""
    return np.clip(ss * t + 0.5, 0.0, 1.0)


def _dist_int(x: np.ndarray) -> np.ndarray:
    """Distance of x to the nearest integer (0..0.5)."""
    return np.abs(x - np.round(x))


def _bands(phase: np.ndarray, duty: np.ndarray | float, scale: np.ndarray) -> np.ndarray:
    """Square wave on `phase` (bands centred on integers) with the given duty cycle.

    `scale` converts phase units to output pixels for the anti-aliasing ramp.
    """
    return _soft((duty / 2 - _dist_int(phase)) * scale)


def _lattice_local(a: np.ndarray, b: np.ndarray, cell: np.ndarray):
    """Offsets (in pixels) from the nearest node of a square lattice of spacing `cell`."""
    return (a / cell - np.round(a / cell)) * cell, (b / cell - np.round(b / cell)) * cell


def _noise(rng: np.random.Generator, n: int, envelope: np.ndarray) -> np.ndarray:
    """Gaussian noise field with amplitude spectrum `envelope` (on the rfft grid), unit std."""
    shape = (SIZE * _SS, SIZE * _SS)
    white = rng.standard_normal((n, *shape), dtype=np.float32)
    field = np.fft.irfft2(np.fft.rfft2(white) * envelope, s=shape).astype(np.float32)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field


def _cell_randoms(rng: np.random.Generator, n: int, k: int, grid: int = 32) -> np.ndarray:
    """k random numbers per lattice cell, per image: [n, k, grid*grid] (indices wrap)."""
    return rng.random((n, k, grid * grid), dtype=np.float32)


def _gather(table: np.ndarray, iu: np.ndarray, iv: np.ndarray, grid: int = 32) -> np.ndarray:
    """Look up per-cell values `table` [n, k, G*G] at integer cell indices [n, S, S]."""
    n, k, cells = table.shape
    mask = grid - 1  # grid is a power of two: wrap indices with a cheap bitwise and
    flat = (iv & mask) * grid + (iu & mask) + (np.arange(n) * k * cells).reshape(n, 1, 1)
    return np.stack([np.take(table, flat + j * cells) for j in range(k)], axis=1)


# ----------------------------------------------------------------------------- coarse families
# Each renderer maps a Frame and the fine parameter `t` in [0, 1] (per image, [n,1,1]) to a
# pattern in [0, 1]. Periods are in output pixels; 4.5..5.5 px keeps >= 1.5 repeats inside an
# 8%-area crop (~9x9 px) while staying above the 2-px Nyquist limit.
def _stripes(f: Frame, t):
    return _bands(f.u / f.period, 0.15 + 0.35 * t, f.period)


def _checker(f: Frame, t):
    aspect = np.sqrt(1.0 + 1.6 * t)
    pu, pv = 1.3 * f.period * aspect, 1.3 * f.period / aspect
    a, b = _bands(f.u / pu, 0.5, pu), _bands(f.v / pv, 0.5, pv)
    return a + b - 2 * a * b  # soft XOR


def _grid(f: Frame, t):
    alpha = np.deg2rad(90.0 - 50.0 * t)  # angle between the two line families
    w = f.u * np.cos(alpha) + f.v * np.sin(alpha)
    p = 1.2 * f.period
    return np.maximum(_bands(f.u / p, 0.22, p), _bands(w / p, 0.22, p))


def _dots(f: Frame, t):
    a, b = _hex_local(f.u, f.v, 1.2 * f.period)
    return _soft((0.14 + 0.22 * t) * 1.2 * f.period - np.hypot(a, b), f.ss)


def _rings(f: Frame, t):
    r, _ = f.polar()
    return _bands(r / f.period, 0.55 - 0.35 * t, f.period)


def _spiral(f: Frame, t):
    r, phi = f.polar()
    arms = np.round(3 + 8 * t)  # odd counts 3..11 for t = 0..1
    return _bands(r / f.period + arms * phi / (2 * np.pi), 0.45, f.period)


def _waves(f: Frame, t):
    lam = 4.0 * f.period
    amp = (0.05 + 0.12 * t) * lam  # smooth: peak slope 0.3..1.1
    phase = f.rng.uniform(0, 2 * np.pi, (f.n, 1, 1)).astype(np.float32)
    return _bands((f.u + amp * np.sin(2 * np.pi * f.v / lam + phase)) / f.period, 0.4, f.period)


def _zigzag(f: Frame, t):
    lam = 2.0 * f.period
    amp = (0.5 + 0.5 * t) * lam  # sharp corners, slope 1..2
    tri = 2 * _dist_int(f.v / lam)  # 0..1 triangle wave
    return _bands((f.u + amp * tri) / f.period, 0.4, f.period)


def _blobs(f: Frame, t):
    sigma = 1.0 / (2.2 * f.period)  # spectral width in cycles/pixel
    field = _noise(f.rng, f.n, np.exp(-0.5 * (_FX**2 + _FY**2) / sigma**2))
    area = 0.18 + 0.32 * t  # foreground area fraction
    return np.clip((field - ndtri(1 - area).astype(np.float32)) * 2.5 + 0.5, 0, 1)


def _worley(f: Frame, cell, jitter):
    """Distances to the nearest and second-nearest random seed (one seed per lattice cell)."""
    gu, gv = f.u / cell, f.v / cell
    iu, iv = np.floor(gu).astype(np.int32), np.floor(gv).astype(np.int32)
    fu, fv = gu - iu - 0.5, gv - iv - 0.5  # position inside the cell, -0.5..0.5
    seeds = jitter * (_cell_randoms(f.rng, f.n, 2) - 0.5)
    d1 = np.full(f.u.shape, np.inf, np.float32)  # squared distances, in cells
    d2 = d1.copy()
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            off = _gather(seeds, iu + du, iv + dv)
            d = (fu - du - off[:, 0]) ** 2 + (fv - dv - off[:, 1]) ** 2
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
    return np.sqrt(d1) * cell, np.sqrt(d2) * cell


def _cells(f: Frame, t):
    cell = 1.6 * f.period
    d1, d2 = _worley(f, cell, 0.9)
    return _soft((0.05 + 0.12 * t) * cell - (d2 - d1) / 2, f.ss)


def _bricks(f: Frame, t):
    h = f.period
    length = h * (1.4 + 2.0 * t)
    row = np.floor(f.v / h)
    shift = 0.5 * length * (row % 2)
    bed = _bands(f.v / h, 0.22, h)
    head = _bands((f.u + shift) / length, 0.22 * h / length, length)
    return np.maximum(bed, head)


_HEX_NORMALS = [(1.0, 0.0), (0.5, np.sqrt(3) / 2), (-0.5, np.sqrt(3) / 2)]


def _hex_local(u: np.ndarray, v: np.ndarray, s: np.ndarray):
    """Offsets from the nearest node of a hexagonal lattice with node spacing `s`."""
    # the hexagonal lattice is two rectangular lattices (s x s*sqrt(3)); take the nearer node
    h = s * np.sqrt(3)
    a1, b1 = u - np.round(u / s) * s, v - np.round(v / h) * h
    a2 = (u - s / 2) - np.round((u - s / 2) / s) * s
    b2 = (v - h / 2) - np.round((v - h / 2) / h) * h
    first = a1 * a1 + b1 * b1 <= a2 * a2 + b2 * b2
    return np.where(first, a1, a2), np.where(first, b1, b2)


def _honeycomb(f: Frame, t):
    s = 1.4 * f.period
    a, b = _hex_local(f.u, f.v, s)  # offset from the cell centre
    hexdist = np.max([np.abs(a * nx + b * ny) for nx, ny in _HEX_NORMALS], axis=0)
    return _soft(hexdist - (0.5 - 0.04 - 0.12 * t) * s, f.ss)


def _sunburst(f: Frame, t):
    r, phi = f.polar()
    rays = np.round(10 + 16 * t)
    return _bands(rays * phi / (2 * np.pi), 0.5, np.maximum(r, 1.0) * 2 * np.pi / rays)


def _speckle(f: Frame, t):
    cell = 1.1 * f.period
    gu, gv = f.u / cell, f.v / cell
    iu, iv = np.floor(gu).astype(np.int32), np.floor(gv).astype(np.int32)
    table = _gather(_cell_randoms(f.rng, f.n, 4), iu, iv)
    present = table[:, 0] < 0.3 + 0.6 * t
    radius = 0.14 + 0.14 * table[:, 1]  # in cells; the dot stays inside its cell
    cu = iu + radius + (1 - 2 * radius) * table[:, 2]
    cv = iv + radius + (1 - 2 * radius) * table[:, 3]
    dot = _soft((radius - np.hypot(gu - cu, gv - cv)) * cell, f.ss)
    return np.where(present, dot, 0.0)


def _fibres(f: Frame, t):
    ratio = 2.5 + 5.0 * t  # anisotropy of the spectrum: streak length / width
    across = 1.0 / f.period
    env = np.exp(-0.5 * ((_FX / across) ** 2 + (_FY * ratio / across) ** 2))
    return 0.5 + 0.5 * np.tanh(1.5 * _noise(f.rng, f.n, env))


def _marble(f: Frame, t):
    sigma = 1.0 / (6.0 * f.period)
    field = _noise(f.rng, f.n, np.exp(-0.5 * (_FX**2 + _FY**2) / sigma**2))
    turbulence = (0.6 + 1.6 * t) * f.period
    return _bands((f.u + turbulence * field) / f.period, 0.35, f.period)


def _truchet(f: Frame, t):
    cell = 1.4 * f.period
    gu, gv = f.u / cell, f.v / cell
    iu, iv = np.floor(gu).astype(np.int32), np.floor(gv).astype(np.int32)
    a, b = gu - iu, gv - iv
    slash = _gather(_cell_randoms(f.rng, f.n, 1), iu, iv)[:, 0] < 0.5 + 0.45 * t
    dist = np.where(slash, np.abs(a - b), np.abs(a + b - 1)) / np.sqrt(2)
    return _soft(0.11 * cell - dist * cell)


def _herringbone(f: Frame, t):
    width = 2.0 * f.period
    col = np.floor(f.u / width)
    sign = 1 - 2 * (col % 2)
    alpha = np.deg2rad(25 + 35 * t)
    along = (f.v * np.cos(alpha) + sign * f.u * np.sin(alpha)) / (0.8 * f.period)
    return np.maximum(_bands(along, 0.45, 0.8 * f.period), _bands(f.u / width, 0.1, width))


def _crosses(f: Frame, t):
    cell = 1.5 * f.period
    a, b = _lattice_local(f.u, f.v, cell)
    a, b = np.abs(a), np.abs(b)
    arm, half = (0.18 + 0.22 * t) * cell, 0.08 * cell + 0.3
    return np.maximum(_soft(half - a) * _soft(arm - b), _soft(half - b) * _soft(arm - a))


def _clouds(f: Frame, t):
    slope = 1.0 + 1.2 * t  # amplitude spectrum ~ 1/f^slope
    radius = np.maximum(np.hypot(_FX, _FY), 1.0 / (SIZE * _SS))
    env = radius ** (-slope) * (radius < 0.5)
    return 0.5 + 0.5 * np.tanh(1.2 * _noise(f.rng, f.n, env))


@dataclass(frozen=True)
class Family:
    """One coarse class: a texture generator and the names of its five parameter values."""

    name: str
    render: Callable[[Frame, np.ndarray], np.ndarray]
    fine: tuple[str, str, str, str, str]  # fine-class names, parameter t = 0, .25, .5, .75, 1
    parameter: str  # what the fine classes vary


FAMILIES: tuple[Family, ...] = (
    Family("stripes", _stripes, ("hairline", "thin", "medium", "wide", "even"), "duty cycle"),
    Family("checker", _checker, ("square", "oblong", "long", "longer", "strip"), "aspect"),
    Family("grid", _grid, ("square", "tilted", "rhombic", "slanted", "narrow"), "line angle"),
    Family("dots", _dots, ("tiny", "small", "medium", "large", "touching"), "dot radius"),
    Family("rings", _rings, ("thick", "broad", "medium", "thin", "fine"), "ring width"),
    Family(
        "spiral",
        _spiral,
        ("three_arms", "five_arms", "seven_arms", "nine_arms", "eleven_arms"),
        "arms",
    ),
    Family("waves", _waves, ("ripple", "gentle", "swell", "rolling", "deep"), "amplitude"),
    Family("zigzag", _zigzag, ("shallow", "low", "mid", "steep", "sharp"), "amplitude"),
    Family("blobs", _blobs, ("sparse", "scattered", "patchy", "dense", "half"), "area"),
    Family("cells", _cells, ("hairline", "thin", "medium", "thick", "heavy"), "wall width"),
    Family("bricks", _bricks, ("block", "short", "standard", "long", "slab"), "brick length"),
    Family("honeycomb", _honeycomb, ("hairline", "thin", "medium", "thick", "heavy"), "wall width"),
    Family(
        "sunburst",
        _sunburst,
        ("ten_rays", "fourteen_rays", "eighteen_rays", "twentytwo_rays", "twentysix_rays"),
        "rays",
    ),
    Family("speckle", _speckle, ("sparse", "light", "medium", "heavy", "dense"), "density"),
    Family("fibres", _fibres, ("short", "medium", "long", "longer", "silky"), "anisotropy"),
    Family("marble", _marble, ("calm", "veined", "swirled", "turbulent", "chaotic"), "turbulence"),
    Family("truchet", _truchet, ("maze", "mixed", "biased", "drifting", "aligned"), "bias"),
    Family(
        "herringbone", _herringbone, ("shallow", "low", "mid", "steep", "upright"), "stripe angle"
    ),
    Family("crosses", _crosses, ("stubby", "short", "medium", "long", "spiky"), "arm length"),
    Family("clouds", _clouds, ("rough", "grainy", "soft", "smooth", "hazy"), "spectral slope"),
)
N_FINE_PER_COARSE = 5
_PERIOD_RANGE = (4.5, 5.5)  # random resized crops vary the scale further
_LEVEL_JITTER = 0.04  # per-image spread of the fine parameter (levels are 0.25 apart)


def class_names() -> tuple[list[str], list[str], np.ndarray]:
    """(fine_names, coarse_names, fine_to_coarse) of the `synthetic` dataset."""
    fine = [f"{fam.name}_{suffix}" for fam in FAMILIES for suffix in fam.fine]
    coarse = [fam.name for fam in FAMILIES]
    fine_to_coarse = np.repeat(np.arange(len(FAMILIES), dtype=np.int64), N_FINE_PER_COARSE)
    return fine, coarse, fine_to_coarse


# ----------------------------------------------------------------------------- colour
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_MIN_CONTRAST = 0.25  # luminance gap between foreground and background


def _colour_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (fg, bg) RGB colours [n, 3], fg lighter than bg by a luminance gap >= 0.25."""
    fg, bg = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
    todo = np.arange(n)
    while todo.size:
        # ~1 in 6 uniform pairs qualifies: draw 24 per image, keep each image's first good one
        cand = rng.random((todo.size, 24, 2, 3), dtype=np.float32)
        gap = (cand[:, :, 0] - cand[:, :, 1]) @ _LUMA
        ok = gap >= _MIN_CONTRAST
        found = ok.any(axis=1)
        pick = cand[found, ok[found].argmax(axis=1)]
        fg[todo[found]], bg[todo[found]] = pick[:, 0], pick[:, 1]
        todo = todo[~found]
    return fg, bg


def _colourise(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """Map a [n, 32, 32] pattern in [0, 1] to uint8 RGB: a random background colour and a
    random lighter foreground colour (luminance gap >= 0.25)."""
    fg, bg = _colour_pairs(rng, pattern.shape[0])
    img = bg[:, None, None] + pattern[..., None] * (fg - bg)[:, None, None]
    img *= np.float32(255)
    img += np.float32(0.5)  # round to nearest on the cast below
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _downsample(pattern: np.ndarray) -> np.ndarray:
    """Average _SS x _SS blocks (strided sums: ~10x faster than a reshape-mean)."""
    total = sum(pattern[:, i::_SS, j::_SS] for i in range(_SS) for j in range(_SS))
    return total * np.float32(1.0 / _SS**2)


# ----------------------------------------------------------------------------- rendering
def _render(render, rng: np.random.Generator, n: int, level: np.ndarray) -> np.ndarray:
    return _render_layers(render, rng, n, level)[0]


def _render_layers(
    render, rng: np.random.Generator, n: int, level: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, 32, 32, 3], foreground coverage [n, 32, 32] in [0, 1])."""
    ss = 1 if render in _DIRECT else _SS
    frame = _frame(rng, n, _PERIOD_RANGE, ss)
    pattern = np.asarray(render(frame, level.reshape(n, 1, 1).astype(np.float32)), np.float32)
    coverage = _downsample(pattern) if ss > 1 else pattern
    return _colourise(rng, coverage), coverage


# ----------------------------------------------------------------------------- depth
# The foreground pattern is a layer in front of the background (seed 003's depth task needs a
# per-pixel depth): the background is a tilted plane at distance 4..8 (a wall or floor seen
# at an angle: up to +-1.5 across the image in each direction), the foreground layer floats
# 1..3 in front of it, and a pixel's depth is the coverage-weighted mix of the two (an
# anti-aliased edge pixel lies between them, as a box-filtered depth would). The depth
# parameters come from their own random stream, so the images are those of the version
# without depth, bit for bit.
_DEPTH_BASE = (4.0, 8.0)
_DEPTH_TILT = 1.5
_DEPTH_GAP = (1.0, 3.0)


def _depth(rng: np.random.Generator, coverage: np.ndarray) -> np.ndarray:
    """float16 depth [n, 32, 32] of layers with foreground `coverage` [n, 32, 32]."""
    n = coverage.shape[0]
    base = rng.uniform(*_DEPTH_BASE, (n, 1, 1))
    tilt_x, tilt_y = rng.uniform(-_DEPTH_TILT, _DEPTH_TILT, (2, n, 1, 1))
    gap = rng.uniform(*_DEPTH_GAP, (n, 1, 1))
    x, y = _GRIDS[1]
    background = base + tilt_x * (x / SIZE - 0.5) + tilt_y * (y / SIZE - 0.5)
    return (background - gap * coverage).astype(np.float16)


def _streams(seed: int, stream: tuple[int, ...], n: int):
    """Independent generators for consecutive chunks of one (split, class) stream."""
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([seed, *stream, chunk])
        yield rng, min(_CHUNK, n - start)


def render_fine_class(fine: int, n: int, seed: int, split: int = 0) -> np.ndarray:
    """n images [n, 32, 32, 3] uint8 of fine class `fine` (0..99), deterministic in all args."""
    return render_fine_class_with_depth(fine, n, seed, split)[0]


def render_fine_class_with_depth(
    fine: int, n: int, seed: int, split: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`render_fine_class`'s images and their depth maps, float16 [n, 32, 32]."""
    family = FAMILIES[fine // N_FINE_PER_COARSE]
    t = (fine % N_FINE_PER_COARSE) / (N_FINE_PER_COARSE - 1)
    images, depths = [], []
    for chunk, (rng, m) in enumerate(_streams(seed, (0, split, fine), n)):
        level = np.clip(t + _LEVEL_JITTER * rng.standard_normal(m), 0.0, 1.0)
        image, coverage = _render_layers(family.render, rng, m, level)
        images.append(image)
        depths.append(_depth(np.random.default_rng([seed, 3, split, fine, chunk]), coverage))
    if not images:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8), np.zeros((0, SIZE, SIZE), np.float16)
    return np.concatenate(images), np.concatenate(depths)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def synthetic_dataset(seed: int = 0, train_per_class: int = 500, test_per_class: int = 100):
    """The `synthetic` dataset as a dict in the dataset-file layout (see ARCHITECTURE.md)."""
    seed = _check_seed(seed)
    counts = {
        "train": _check_count("train_per_class", train_per_class),
        "test": _check_count("test_per_class", test_per_class),
    }
    fine_names, coarse_names, fine_to_coarse = class_names()
    arrays = {}
    for split_id, (split, per_class) in enumerate(counts.items()):
        parts = [
            render_fine_class_with_depth(c, per_class, seed, split_id)
            for c in range(len(fine_names))
        ]
        fine = np.repeat(np.arange(len(fine_names), dtype=np.int64), per_class)
        arrays[f"{split}_images"] = np.concatenate([images for images, _ in parts])
        arrays[f"{split}_depth"] = np.concatenate([depth for _, depth in parts])
        arrays[f"{split}_fine"] = fine
        arrays[f"{split}_coarse"] = fine_to_coarse[fine]
    arrays["fine_names"] = np.array(fine_names)
    arrays["coarse_names"] = np.array(coarse_names)
    arrays["fine_to_coarse"] = fine_to_coarse
    return arrays


# ----------------------------------------------------------------------------- human set
# Five generators, each giving one pair of classes at the two ends of its parameter p in [0, 1].
def _tartan(f: Frame, p):
    pv = f.period * (1.0 + 1.2 * p)  # p = 0: square checks, p = 1: oblong checks
    return 0.5 * (_bands(f.u / f.period, 0.5, f.period) + _bands(f.v / pv, 0.5, pv))


def _spots(f: Frame, p):
    s = 1.3 * f.period
    r = np.hypot(*_hex_local(f.u, f.v, s))
    outer, inner = 0.38 * s, 0.38 * s * (0.05 + 0.7 * p)  # p = 1: thin-walled rings
    return _soft(outer - r, f.ss) * _soft(r - inner, f.ss)


def _stars(f: Frame, p):
    s = 1.5 * f.period
    a, b = _hex_local(f.u, f.v, s)
    depth = 0.08 + 0.5 * p  # how far the five points stick out
    outline = 0.3 * s * (1 + depth * np.cos(5 * np.arctan2(b, a))) / (1 + depth)
    return _soft(outline - np.hypot(a, b), f.ss)


def _moire(f: Frame, p):
    delta = np.deg2rad(8.0 + 16.0 * p)  # angle between the gratings sets the beat period
    w = f.u * np.cos(delta) + f.v * np.sin(delta)
    return 0.25 * (2 + np.cos(2 * np.pi * f.u / f.period) + np.cos(2 * np.pi * w / f.period))


def _weave(f: Frame, p):
    block = 2.4 * f.period
    odd = (np.floor(f.u / block) + np.floor(f.v / block)) % 2 == 1
    across = np.where(odd, f.u, f.v) / (block / 3)  # three threads per block
    return _bands(across, 0.3 + 0.45 * p, block / 3)


HUMAN_CLASSES = (
    "tartan_square",
    "tartan_oblong",
    "solid_spots",
    "hollow_spots",
    "blunt_stars",
    "sharp_stars",
    "moire_broad",
    "moire_tight",
    "weave_thin",
    "weave_thick",
)
_HUMAN_RENDERERS = (_tartan, _spots, _stars, _moire, _weave)  # pair k = classes 2k, 2k+1
# Drawn directly at 32x32 (4x cheaper): their edges come from exact distances through _soft,
# which box-filters them; the others have corners or crossings that need supersampling.
_DIRECT = frozenset({_dots, _cells, _honeycomb, _speckle, _spots, _stars})
PAIR_CONFUSION = (0.03, 0.06, 0.09, 0.12, 0.15)  # expected P(answer = partner | class)
OTHER_CONFUSION = 0.0025  # expected P(answer = a given class outside the pair)
_AMBIGUITY_SPREAD = 0.35  # parameter distance covered by ambiguity u from 0 to 1


def synthetic_reference_confusion() -> np.ndarray:
    """Expected human answer distribution per true class of the synthetic human set, [10, 10].

    Row i, column j is P(answer j | true class i). The classes form five pairs (2k, 2k+1);
    a pair-k image is called its partner with probability PAIR_CONFUSION[k] (0.03, 0.06, 0.09,
    0.12, 0.15 for tartan, spots, stars, moire, weave), any class outside the pair with
    probability 0.0025, and its own class otherwise (0.95 down to 0.83): mean accuracy 0.89.
    """
    n = len(HUMAN_CLASSES)
    ref = np.full((n, n), OTHER_CONFUSION)
    for k, c in enumerate(PAIR_CONFUSION):
        a, b = 2 * k, 2 * k + 1
        ref[a, b] = ref[b, a] = c
    np.fill_diagonal(ref, 0.0)
    np.fill_diagonal(ref, 1.0 - ref.sum(axis=1))
    return ref


def _human_class(label: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of one human-set class and each image's row of answer probabilities."""
    pair, end = divmod(label, 2)
    partner = 2 * pair + 1 - end
    reference = synthetic_reference_confusion()[label]
    # harder pairs also have closer parameter ranges, so difficulty is visible in the images
    half_gap = 0.05 + 0.5 * (max(PAIR_CONFUSION) - PAIR_CONFUSION[pair])
    images, rows = [], []
    for rng, m in _streams(seed, (1, label), n):
        u = rng.random(m)  # ambiguity: 1 = closest to the partner class
        offset = half_gap + (1 - u) * _AMBIGUITY_SPREAD
        p = 0.5 - offset if end == 0 else 0.5 + offset
        images.append(_render(_HUMAN_RENDERERS[pair], rng, m, p))
        row = np.tile(reference, (m, 1))
        row[:, partner] = 2 * reference[partner] * u  # mean over u ~ U(0, 1) is the reference
        row[:, label] = 1 - (row.sum(axis=1) - row[:, label])
        rows.append(row)
    return np.concatenate(images), np.concatenate(rows)


def human_set(seed: int = 0, per_class: int = 1000, annotators: int = 50) -> dict:
    """The synthetic human-comparison set: images, labels, class_names, human_counts.

    Each image's counts are a multinomial draw over `annotators` + Poisson(1) simulated people
    from its own answer distribution, whose mean over a class is the reference row.
    """
    seed = _check_seed(seed)
    per_class = _check_count("per_class", per_class)
    annotators = _check_count("annotators", annotators)
    parts = [_human_class(c, per_class, seed) for c in range(len(HUMAN_CLASSES))]
    images, rows = zip(*parts, strict=True)
    rows = np.concatenate(rows)
    rng = np.random.default_rng([seed, 2])
    people = annotators + rng.poisson(1.0, len(rows))
    counts = rng.multinomial(people, rows)
    return {
        "images": np.concatenate(images),
        "labels": np.repeat(np.arange(len(HUMAN_CLASSES), dtype=np.int64), per_class),
        "class_names": np.array(HUMAN_CLASSES),
        "human_counts": counts.astype(np.float64),
    }


# ----------------------------------------------------------------------------- object set
# Seed 003's position/pose transfer (Fig. 1e, Methods) regresses an object's position and pose
# from a layer's spatially averaged output. The textures above fill the image, so their
# "position" is a phase; this set places one textured object (an ellipse of aspect 1:2 cut
# from a texture of one of the 20 families) on a lower-contrast texture background, at a
# recorded position, size and in-plane rotation. Its own random stream (3, ...) leaves every
# other image of this module unchanged.
OBJECT_POSITION = (8.0, 24.0)  # centre x and y, pixels from the top-left corner
OBJECT_SCALE = (5.0, 10.0)  # semi-major axis, pixels
OBJECT_ASPECT = 0.5  # semi-minor / semi-major axis


def object_set(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n images [n, 32, 32, 3] uint8 of one textured ellipse on a textured background, with
    per image `position` float [n, 2] (x, y of the centre in pixels), `scale` [n] (semi-major
    axis in pixels), `rotation` [n] (angle of the major axis from the x axis, radians in
    [0, π): an ellipse is the same turned by π) and `labels` [n] (the object's family)."""
    n, seed = _check_count("n", n), _check_seed(seed)
    parts = {k: [] for k in ("images", "position", "scale", "rotation", "labels")}
    for rng, m in _streams(seed, (3,), n):
        family = rng.integers(0, len(FAMILIES), m)
        ground = (family + rng.integers(1, len(FAMILIES), m)) % len(FAMILIES)
        position = rng.uniform(*OBJECT_POSITION, (m, 2))
        scale = rng.uniform(*OBJECT_SCALE, m)
        rotation = rng.uniform(0, np.pi, m)
        inside = _ellipse_mask(position, scale, rotation)
        obj = _family_images(rng, family).astype(np.float32)
        back = 0.5 * _family_images(rng, ground).astype(np.float32) + 64.0
        image = inside[..., None] * obj + (1 - inside[..., None]) * back
        parts["images"].append(np.clip(np.round(image), 0, 255).astype(np.uint8))
        for key, value in zip(
            ("position", "scale", "rotation", "labels"),
            (position, scale, rotation, family),
            strict=True,
        ):
            parts[key].append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _family_images(rng: np.random.Generator, family: np.ndarray) -> np.ndarray:
    """One texture image per entry of `family` (a random fine level of that family)."""
    out = np.zeros((family.size, SIZE, SIZE, 3), np.uint8)
    for k in np.unique(family):
        where = np.flatnonzero(family == k)
        out[where] = _render(FAMILIES[k].render, rng, where.size, rng.random(where.size))
    return out


def _ellipse_mask(position: np.ndarray, scale: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Soft (one-pixel edge) masks [n, 32, 32] of the rotated ellipses."""
    x, y = _GRIDS[1]
    dx = x[None] - position[:, 0, None, None]
    dy = y[None] - position[:, 1, None, None]
    c, s = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    a = scale[:, None, None]
    along, across = dx * c + dy * s, -dx * s + dy * c
    radius = np.sqrt((along / a) ** 2 + (across / (OBJECT_ASPECT * a)) ** 2)
    return np.clip((1 - radius) * OBJECT_ASPECT * a + 0.5, 0.0, 1.0).astype(np.float32)
