"""Procedural RGB training images for the embedded prior, drawn on the fly from a numpy Generator.

Every image is one of three kinds: a tabletop-like scene (a wall, a table surface, a few shaded
objects with shadows, sometimes a jointed arm), flat shapes layered on a texture, or a full-frame
texture (multi-scale value noise, stripes, checkers, gradients). Edges range from sharp
(anti-aliased) to blurry. Everything is vectorised numpy over the pixel grid, so a 64 px image takes
about a millisecond, and the output is a pure function of the generator's state (seeded: deterministic).

Example::

    from stemob.priors.procedural import procedural_batch
    images = procedural_batch(0, count=8, size=64)   # uint8 (8, 64, 64, 3)
"""

from __future__ import annotations

import colorsys

import numpy as np

Array = np.ndarray
KIND_WEIGHTS = {"scene": 0.5, "shapes": 0.3, "texture": 0.2}


def _coords(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates in [0, 1): (y, x), each (size, size)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.0, 1.0)) -> Array:
    """A random RGB colour in [0, 1] (hue uniform, saturation and value spread widely)."""
    h = rng.random()
    s = rng.uniform(*saturation)
    v = rng.uniform(0.15, 1.0)
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _smoothstep(t: Array) -> Array:
    return t * t * (3.0 - 2.0 * t)


def value_noise(
    rng: np.random.Generator,
    size: int,
    channels: int = 1,
    base_cells: int = 2,
    octaves: int = 4,
    persistence: float = 0.5,
) -> Array:
    """Multi-scale value noise (size, size, channels), stretched to [0, 1]."""
    coord = (np.arange(size, dtype=np.float32) + 0.5) / size
    out = np.zeros((size, size, channels), np.float32)
    amplitude, cells = 1.0, base_cells
    for _ in range(octaves):
        if cells > size:
            break
        lattice = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
        u = coord * cells
        i0 = np.minimum(u.astype(np.int64), cells - 1)
        f = _smoothstep(u - i0)
        fy, fx = f[:, None, None], f[None, :, None]
        top = lattice[np.ix_(i0, i0)] * (1 - fx) + lattice[np.ix_(i0, i0 + 1)] * fx
        bottom = lattice[np.ix_(i0 + 1, i0)] * (1 - fx) + lattice[np.ix_(i0 + 1, i0 + 1)] * fx
        out += amplitude * (top * (1 - fy) + bottom * fy)
        amplitude *= persistence
        cells *= 2
    low, high = out.min(), out.max()
    return (out - low) / max(float(high - low), 1e-6)


def _lerp_colours(t: Array, c0: Array, c1: Array) -> Array:
    """Map a scalar field (H, W) in [0, 1] to colours between c0 and c1."""
    return c0 + t[..., None] * (c1 - c0)


def _sharpen(t: Array, rng: np.random.Generator) -> Array:
    """Push a [-1, 1] periodic field towards hard edges with a random sharpness."""
    k = rng.choice([1.0, rng.uniform(2.0, 8.0), rng.uniform(10.0, 60.0)])
    return 1.0 / (1.0 + np.exp(-k * t))


def noise_texture(rng: np.random.Generator, size: int) -> Array:
    """Coloured value noise: two-colour ramp or independent channels."""
    if rng.random() < 0.6:
        n = value_noise(
            rng, size, 1, int(rng.integers(1, 6)), int(rng.integers(2, 6)), rng.uniform(0.35, 0.7)
        )
        return _lerp_colours(n[..., 0], random_colour(rng), random_colour(rng))
    n = value_noise(
        rng, size, 3, int(rng.integers(1, 5)), int(rng.integers(2, 6)), rng.uniform(0.35, 0.7)
    )
    return n * rng.uniform(0.4, 1.0) + rng.uniform(0.0, 0.4)


def stripes_texture(rng: np.random.Generator, size: int) -> Array:
    """Stripes at a random angle and frequency, optionally warped by noise (wood-like)."""
    y, x = _coords(size)
    angle = rng.uniform(0, np.pi)
    phase = 2 * np.pi * rng.uniform(1.0, 14.0) * (
        x * np.cos(angle) + y * np.sin(angle)
    ) + rng.uniform(0, 6.3)
    if rng.random() < 0.4:
        phase = phase + rng.uniform(1.0, 8.0) * value_noise(rng, size, 1, 2, 3)[..., 0]
    return _lerp_colours(_sharpen(np.sin(phase), rng), random_colour(rng), random_colour(rng))


def checker_texture(rng: np.random.Generator, size: int) -> Array:
    """A (possibly rotated) checkerboard with sharp or soft cells."""
    y, x = _coords(size)
    angle = rng.uniform(0, np.pi / 2) if rng.random() < 0.5 else 0.0
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    freq = rng.uniform(1.5, 10.0)
    field = np.sin(2 * np.pi * freq * u + rng.uniform(0, 6.3)) * np.sin(
        2 * np.pi * freq * v + rng.uniform(0, 6.3)
    )
    return _lerp_colours(_sharpen(field * 3.0, rng), random_colour(rng), random_colour(rng))


def gradient_texture(rng: np.random.Generator, size: int) -> Array:
    """A linear or radial gradient between two random colours."""
    y, x = _coords(size)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:
        cy, cx = rng.uniform(-0.2, 1.2, size=2)
        t = np.clip(np.hypot(y - cy, x - cx) / rng.uniform(0.3, 1.2), 0, 1)
    return _lerp_colours(t.astype(np.float32), random_colour(rng), random_colour(rng))


def flat_texture(rng: np.random.Generator, size: int) -> Array:
    """A single colour."""
    return np.broadcast_to(random_colour(rng), (size, size, 3)).astype(np.float32)


TEXTURES = (flat_texture, noise_texture, stripes_texture, checker_texture, gradient_texture)


def random_texture(
    rng: np.random.Generator, size: int, weights: tuple[float, ...] = (0.3, 0.25, 0.15, 0.1, 0.2)
) -> Array:
    """One texture from ``TEXTURES`` chosen with ``weights``."""
    index = rng.choice(len(TEXTURES), p=np.asarray(weights) / np.sum(weights))
    return TEXTURES[index](rng, size)


def _soft_mask(sdf: Array, edge_px: float, size: int) -> Array:
    """Coverage from a signed distance (negative inside) with an edge ``edge_px`` pixels wide."""
    width = max(edge_px, 0.5) / size
    return np.clip(0.5 - sdf / width, 0.0, 1.0).astype(np.float32)


def shape_sdf(rng: np.random.Generator, size: int, centre: Array, radius: float) -> Array:
    """Signed distance (approximate outside) of a random rectangle, ellipse or convex polygon."""
    y, x = _coords(size)
    dy, dx = y - centre[0], x - centre[1]
    angle = rng.uniform(0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    kind = rng.integers(3)
    a, b = radius, radius * rng.uniform(0.35, 1.0)
    if kind == 0:  # rectangle
        return np.maximum(np.abs(u) - a, np.abs(v) - b)
    if kind == 1:  # ellipse
        return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)
    corners = int(rng.integers(3, 8))  # convex polygon: the max over its edges' half-planes
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * rng.uniform(0.7, 1.0, corners)
    px, py = radii * np.cos(angles), radii * np.sin(angles)
    ex, ey = np.roll(px, -1) - px, np.roll(py, -1) - py
    length = np.maximum(np.hypot(ex, ey), 1e-6)
    nx, ny = ey / length, -ex / length
    flip = np.where(
        -(px * nx + py * ny) > 0, -1.0, 1.0
    )  # make the normals point away from the centre
    nx, ny = nx * flip, ny * flip
    dist = (u[..., None] - px) * nx + (v[..., None] - py) * ny
    return dist.max(axis=-1)


def _shading(rng: np.random.Generator, size: int, centre: Array, radius: float) -> Array:
    """A multiplicative light field for an object: a directional ramp or a spherical highlight."""
    y, x = _coords(size)
    light = rng.uniform(0, 2 * np.pi)
    ly, lx = np.sin(light), np.cos(light)
    t = ((x - centre[1]) * lx + (y - centre[0]) * ly) / max(radius, 1e-3)
    strength = rng.uniform(0.0, 0.5)
    if rng.random() < 0.5:
        return (1.0 + strength * np.clip(t, -1, 1))[..., None]
    highlight = np.exp(
        -((x - centre[1] - 0.4 * radius * lx) ** 2 + (y - centre[0] - 0.4 * radius * ly) ** 2)
        / (0.5 * radius**2 + 1e-6)
    )
    return (1.0 - strength + 2 * strength * highlight)[..., None]


def paste_object(
    rng: np.random.Generator, image: Array, centre: Array, radius: float, shadow: bool = True
) -> Array:
    """Draw one random shaded, textured shape (with an optional drop shadow) onto ``image``."""
    size = image.shape[0]
    sdf = shape_sdf(rng, size, centre, radius)
    if shadow and rng.random() < 0.7:
        offset = rng.uniform(-0.25, 0.25, size=2) * radius
        offset_px = np.round(offset * size).astype(int)
        shadow_sdf = np.roll(sdf, shift=(int(offset_px[0]) + 1, int(offset_px[1])), axis=(0, 1))
        mask = _soft_mask(shadow_sdf, rng.uniform(2.0, 8.0), size)
        image = image * (1.0 - rng.uniform(0.2, 0.6) * mask[..., None])
    fill = random_texture(rng, size, (0.5, 0.2, 0.1, 0.05, 0.15)) * _shading(
        rng, size, centre, radius
    )
    edge = 1.0 if rng.random() < 0.75 else rng.uniform(2.0, 6.0)
    mask = _soft_mask(sdf, edge, size)[..., None]
    return image * (1.0 - mask) + np.clip(fill, 0, 1) * mask


def _arm(rng: np.random.Generator, image: Array) -> Array:
    """A jointed arm of 2-3 rounded links reaching in from an edge of the frame."""
    size = image.shape[0]
    y, x = _coords(size)
    point = np.array([rng.uniform(-0.05, 0.3), rng.uniform(0.0, 1.0)])
    colour = random_colour(rng, (0.0, 0.4))
    width = rng.uniform(0.03, 0.08)
    heading = rng.uniform(0.3, np.pi - 0.3)
    for _ in range(int(rng.integers(2, 4))):
        heading += rng.uniform(-0.9, 0.9)
        end = point + rng.uniform(0.15, 0.35) * np.array([np.sin(heading), np.cos(heading)])
        seg = end - point
        t = np.clip(
            ((y - point[0]) * seg[0] + (x - point[1]) * seg[1]) / max(float(seg @ seg), 1e-6), 0, 1
        )
        dist = np.hypot(y - point[0] - t * seg[0], x - point[1] - t * seg[1]) - width
        shade = 1.0 - 0.35 * np.clip(dist / width + 1.0, 0, 1)  # darker towards the link's rim
        mask = _soft_mask(dist, 1.0, size)[..., None]
        image = image * (1 - mask) + (colour * shade[..., None]) * mask
        point, width = end, width * rng.uniform(0.7, 1.0)
    return image


def tabletop_scene(rng: np.random.Generator, size: int) -> Array:
    """A wall, a table surface below a horizon, 1-5 shaded objects with shadows, maybe an arm."""
    y, _ = _coords(size)
    horizon = rng.uniform(0.0, 0.5)
    wall = random_texture(rng, size, (0.4, 0.2, 0.05, 0.05, 0.3))
    table = random_texture(rng, size, (0.35, 0.2, 0.25, 0.1, 0.1))
    table = table * (
        1.0 - rng.uniform(0, 0.3) * (1.0 - y[..., None])
    )  # light falls off with distance
    mask = _soft_mask(horizon - y, rng.choice([1.0, 3.0]), size)[..., None]
    image = wall * (1 - mask) + table * mask
    for _ in range(int(rng.integers(1, 6))):
        centre = np.array([rng.uniform(horizon + 0.05, 0.95), rng.uniform(0.05, 0.95)])
        radius = rng.uniform(0.04, 0.2) * (0.6 + 0.6 * centre[0])  # nearer objects look larger
        image = paste_object(rng, image, centre, radius)
    if rng.random() < 0.35:
        image = _arm(rng, image)
    return image


def shapes_on_texture(rng: np.random.Generator, size: int) -> Array:
    """2-8 random shapes of random sizes layered over a random texture."""
    image = random_texture(rng, size)
    for _ in range(int(rng.integers(2, 9))):
        image = paste_object(
            rng,
            image,
            rng.uniform(0, 1, size=2),
            rng.uniform(0.03, 0.35),
            shadow=rng.random() < 0.4,
        )
    return image


def box_blur(image: Array, radius: int) -> Array:
    """Separable box blur of an (H, W, C) image with edge padding."""
    if radius <= 0:
        return image
    k = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
        hi = np.take(c, np.arange(k, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - k), axis=axis)
        image = (hi - lo) / k
    return image


def _photometric(rng: np.random.Generator, image: Array) -> Array:
    """Global light gradient, colour cast, gamma, occasional blur and sensor noise."""
    size = image.shape[0]
    y, x = _coords(size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
    image = image * (1.0 + rng.uniform(0, 0.5) * ramp[..., None])
    image = image * rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.7, 1.2)
    image = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.15:
        image = box_blur(image, 1)
    if rng.random() < 0.2:
        image = image + rng.normal(0, rng.uniform(0.003, 0.02), image.shape)
    return np.clip(image, 0, 1)


def procedural_image(rng: np.random.Generator, size: int = 64) -> Array:
    """One procedural RGB image, float32 (size, size, 3) in [0, 1]."""
    kinds = list(KIND_WEIGHTS)
    kind = kinds[rng.choice(len(kinds), p=np.asarray(list(KIND_WEIGHTS.values())))]
    if kind == "scene":
        image = tabletop_scene(rng, size)
    elif kind == "shapes":
        image = shapes_on_texture(rng, size)
    else:
        image = random_texture(rng, size, (0.05, 0.35, 0.25, 0.15, 0.2))
    image = _photometric(rng, image)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32)


def procedural_batch(
    seed: int | np.random.Generator | tuple[int, ...],
    count: int,
    size: int = 64,
    *,
    as_float: bool = False,
) -> Array:
    """``count`` procedural images (count, size, size, 3): uint8, or float32 in [-1, 1] with ``as_float``.

    ``seed`` is a Generator (consumed) or anything ``np.random.default_rng`` accepts; the same seed
    always gives the same images.
    """
    if count < 0 or size < 8:
        raise ValueError(
            f"procedural_batch: need count >= 0 and size >= 8, got count={count}, size={size}"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    images = (
        np.stack([procedural_image(rng, size) for _ in range(count)])
        if count
        else np.zeros((0, size, size, 3), np.float32)
    )
    if as_float:
        return images * 2.0 - 1.0
    return np.round(images * 255.0).astype(np.uint8)
