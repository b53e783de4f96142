"""Procedural texture datasets: the offline stand-ins for CIFAR-100 and CIFAR-10 + CIFAR-10H.

`synthetic` has CIFAR-100's shape: 20 coarse classes x 5 fine classes of 32x32 RGB images.
A coarse class is one texture generator (stripes, checker, rings, ...) and its five fine
classes are five values of one secondary parameter of that generator (stripe duty cycle, cell
aspect ratio, number of spiral arms, ...). The textures fill the whole image, so a random
resized crop down to 8% of the area still shows several repeats of the coarse-class structure,
while the fine differences are smaller and partly scale-dependent, as they are between fine
classes of one CIFAR-100 superclass. Per image, colours (two foreground and two background
colours blended along a random ramp), rotation, position, scale, fine-parameter jitter and
noise are random, so colour carries no class information; foreground and background always
differ in luminance, so the structure also survives grayscale conversion.

The human-comparison set (`human_set`) has 10 further classes in 5 pairs; the two classes of a
pair are the two ends of one generator's parameter range. Each image gets an ambiguity u in
[0, 1] that moves its parameter towards the pair's midpoint, and its simulated human answers
are drawn from a multinomial over ~50 annotators whose probabilities follow u, so that their
expectation is exactly `synthetic_reference_confusion()`. Image-level human uncertainty is
thereby tied to image content, as in CIFAR-10H.

Everything is rendered with numpy, one batch of images per class, at 2x supersampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

SIZE = 32
_SS = 2  # supersampling factor: patterns are drawn at 64x64 and averaged down (anti-aliasing)
_CHUNK = 250  # images per random stream; output does not depend on memory or batch size
_px = (np.arange(SIZE * _SS, dtype=np.float32) + 0.5) / _SS  # pixel-centre coordinates
_X, _Y = np.meshgrid(_px, _px)  # [S, S], x varies along columns
_FREQ = np.fft.fftfreq(SIZE * _SS, d=1.0 / _SS).astype(np.float32)  # cycles per output pixel
_FX, _FY = np.meshgrid(_FREQ, _FREQ)


@dataclass
class Frame:
    """Per-image geometry of one batch: coordinates in output pixels around a random centre."""

    u: np.ndarray  # [n, S, S] along the pattern's axis (after random rotation)
    v: np.ndarray  # [n, S, S] across it
    period: np.ndarray  # [n, 1, 1] base period in output pixels (random scale)
    angle: np.ndarray  # [n, 1, 1] rotation
    rng: np.random.Generator

    @property
    def n(self) -> int:
        return self.u.shape[0]

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        return np.hypot(self.u, self.v), np.arctan2(self.v, self.u)

    def output_resolution(self) -> Frame:
        """The same frame sampled at output-pixel centres (for patterns that are already smooth)."""
        n = self.n
        u, v = (a.reshape(n, SIZE, _SS, SIZE, _SS).mean(axis=(2, 4)) for a in (self.u, self.v))
        return Frame(u=u, v=v, period=self.period, angle=self.angle, rng=self.rng)


def _supersample(pattern: np.ndarray) -> np.ndarray:
    """Repeat an output-resolution pattern onto the supersampled grid."""
    return np.repeat(np.repeat(pattern, _SS, axis=1), _SS, axis=2)


def _frame(rng: np.random.Generator, n: int, period_range: tuple[float, float]) -> Frame:
    cx, cy = (rng.uniform(2, SIZE - 2, (2, n, 1, 1))).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    lo, hi = np.log(period_range)
    period = np.exp(rng.uniform(lo, hi, (n, 1, 1))).astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = _X - cx, _Y - cy
    return Frame(u=c * dx + s * dy, v=-s * dx + c * dy, period=period, angle=angle, rng=rng)


# ----------------------------------------------------------------------------- primitives
def _soft(t: np.ndarray) -> np.ndarray:
    """1 inside, 0 outside, for a signed distance `t` in output pixels (half-pixel ramp)."""
    return np.clip(2.0 * t + 0.5, 0.0, 1.0)


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
    """Gaussian noise field with amplitude spectrum `envelope` [n|1, S, S], unit std per image."""
    white = rng.standard_normal((n, SIZE * _SS, SIZE * _SS), dtype=np.float32)
    field = np.fft.ifft2(np.fft.fft2(white) * envelope).real.astype(np.float32)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field


def _rotated_freq(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * _FX + s * _FY, -s * _FX + c * _FY


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
# pattern in [0, 1]. Periods are in output pixels; 3.5..6.5 px keeps >= 1.5 repeats inside an
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
    return _soft((0.14 + 0.22 * t) * 1.2 * f.period - np.hypot(a, b))


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
    # drawn at output resolution (4x cheaper): the soft edge comes from the distance itself
    cell = 1.6 * f.period
    d1, d2 = _worley(f.output_resolution(), cell, 0.9)
    return _supersample(_soft((0.05 + 0.12 * t) * cell - (d2 - d1) / 2))


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
    return _soft(hexdist - (0.5 - 0.04 - 0.12 * t) * s)


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
    dot = _soft((radius - np.hypot(gu - cu, gv - cv)) * cell)
    return np.where(present, dot, 0.0)


def _fibres(f: Frame, t):
    fu, fv = _rotated_freq(f.angle)
    ratio = 2.5 + 5.0 * t  # anisotropy of the spectrum: streak length / width
    across = 1.0 / f.period
    env = np.exp(-0.5 * ((fu / across) ** 2 + (fv * ratio / across) ** 2))
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
    Family("spiral", _spiral, ("three_arms", "five_arms", "seven_arms", "nine_arms", "eleven_arms"),
           "arms"),
    Family("waves", _waves, ("ripple", "gentle", "swell", "rolling", "deep"), "amplitude"),
    Family("zigzag", _zigzag, ("shallow", "low", "mid", "steep", "sharp"), "amplitude"),
    Family("blobs", _blobs, ("sparse", "scattered", "patchy", "dense", "half"), "area"),
    Family("cells", _cells, ("hairline", "thin", "medium", "thick", "heavy"), "wall width"),
    Family("bricks", _bricks, ("block", "short", "standard", "long", "slab"), "brick length"),
    Family("honeycomb", _honeycomb, ("hairline", "thin", "medium", "thick", "heavy"),
           "wall width"),
    Family("sunburst", _sunburst, ("ten_rays", "fourteen_rays", "eighteen_rays",
                                   "twentytwo_rays", "twentysix_rays"), "rays"),
    Family("speckle", _speckle, ("sparse", "light", "medium", "heavy", "dense"), "density"),
    Family("fibres", _fibres, ("short", "medium", "long", "longer", "silky"), "anisotropy"),
    Family("marble", _marble, ("calm", "veined", "swirled", "turbulent", "chaotic"),
           "turbulence"),
    Family("truchet", _truchet, ("maze", "mixed", "biased", "drifting", "aligned"), "bias"),
    Family("herringbone", _herringbone, ("shallow", "low", "mid", "steep", "upright"),
           "stripe angle"),
    Family("crosses", _crosses, ("stubby", "short", "medium", "long", "spiky"), "arm length"),
    Family("clouds", _clouds, ("rough", "grainy", "soft", "smooth", "hazy"), "spectral slope"),
)
N_FINE_PER_COARSE = 5
_PERIOD_RANGE = (3.5, 6.5)
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


def _colour_pairs(rng: np.random.Generator, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random (fg, bg) RGB colours [n, 3] whose luminance gap has the given sign, >= 0.25."""
    n = len(sign)
    fg, bg = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
    todo = np.arange(n)
    while todo.size:  # rejection sampling; ~1 in 5 uniform pairs qualifies
        cand = rng.random((2, todo.size, 3), dtype=np.float32)
        ok = sign[todo] * ((cand[0] - cand[1]) @ _LUMA) >= _MIN_CONTRAST
        fg[todo[ok]], bg[todo[ok]] = cand[0][ok], cand[1][ok]
        todo = todo[~ok]
    return fg, bg


def _colourise(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """Map a [n, 32, 32] pattern in [0, 1] to uint8 RGB with random colours, ramp and noise."""
    n = pattern.shape[0]
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), n)
    fg0, bg0 = _colour_pairs(rng, sign)
    fg1, bg1 = _colour_pairs(rng, sign)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    coords = (np.arange(SIZE, dtype=np.float32) - (SIZE - 1) / 2) / SIZE
    ramp = (np.cos(angle) * coords[None, None, :] + np.sin(angle) * coords[None, :, None] + 0.5)
    ramp = ramp.astype(np.float32)[..., None]  # [n, 32, 32, 1], 0..1 across the image
    fg = fg0[:, None, None] + ramp * (fg1 - fg0)[:, None, None]
    bg = bg0[:, None, None] + ramp * (bg1 - bg0)[:, None, None]
    img = bg + pattern[..., None] * (fg - bg)
    sigma = rng.uniform(0.005, 0.03, (n, 1, 1, 1)).astype(np.float32)
    img += sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _downsample(pattern: np.ndarray) -> np.ndarray:
    n = pattern.shape[0]
    return pattern.reshape(n, SIZE, _SS, SIZE, _SS).mean(axis=(2, 4), dtype=np.float32)


# ----------------------------------------------------------------------------- rendering
def _render(render, rng: np.random.Generator, n: int, level: np.ndarray) -> np.ndarray:
    frame = _frame(rng, n, _PERIOD_RANGE)
    pattern = np.asarray(render(frame, level.reshape(n, 1, 1).astype(np.float32)), np.float32)
    return _colourise(rng, _downsample(pattern))


def _streams(seed: int, stream: tuple[int, ...], n: int):
    """Independent generators for consecutive chunks of one (split, class) stream."""
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([seed, *stream, chunk])
        yield rng, min(_CHUNK, n - start)


def render_fine_class(fine: int, n: int, seed: int, split: int = 0) -> np.ndarray:
    """n images [n, 32, 32, 3] uint8 of fine class `fine` (0..99), deterministic in all args."""
    family = FAMILIES[fine // N_FINE_PER_COARSE]
    t = (fine % N_FINE_PER_COARSE) / (N_FINE_PER_COARSE - 1)
    out = []
    for rng, m in _streams(seed, (0, split, fine), n):
        level = np.clip(t + _LEVEL_JITTER * rng.standard_normal(m), 0.0, 1.0)
        out.append(_render(family.render, rng, m, level))
    return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def synthetic_dataset(seed: int = 0, train_per_class: int = 500, test_per_class: int = 100):
    """The `synthetic` dataset as a dict in the dataset-file layout (see ARCHITECTURE.md)."""
    seed = _check_count("seed", seed + 1) - 1 if isinstance(seed, int) and seed >= 0 else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    counts = {
        "train": _check_count("train_per_class", train_per_class),
        "test": _check_count("test_per_class", test_per_class),
    }
    fine_names, coarse_names, fine_to_coarse = class_names()
    arrays = {}
    for split_id, (split, per_class) in enumerate(counts.items()):
        images = [render_fine_class(c, per_class, seed, split_id) for c in range(len(fine_names))]
        fine = np.repeat(np.arange(len(fine_names), dtype=np.int64), per_class)
        arrays[f"{split}_images"] = np.concatenate(images)
        arrays[f"{split}_fine"] = fine
        arrays[f"{split}_coarse"] = fine_to_coarse[fine]
    arrays["fine_names"] = np.array(fine_names)
    arrays["coarse_names"] = np.array(coarse_names)
    arrays["fine_to_coarse"] = fine_to_coarse
    return arrays
