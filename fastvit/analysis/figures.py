"""PNG figures of the analyses, drawn with matplotlib (imported lazily, Agg backend).

Each function takes the numbers (CPU tensors / arrays) and a path, writes one
PNG and returns the path. Mosaics are assembled as one array and drawn with a
single ``imshow``, so a 24 x 24 position-embedding grid stays fast and small.
Every figure has a title; ``note`` (e.g. "random weights: no --checkpoint")
is added to it in red. Mosaics are sized by their content: at least
:data:`PX_PER_CELL` pixels per mosaic pixel at :data:`DPI`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("fastvit analyze draws its figures with matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


DPI = 150
PX_PER_CELL = 4  # a mosaic pixel (one similarity value, one filter weight) is drawn at least this wide
MAX_INCHES = 40.0


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


def _inches(pixels: int, least: float) -> float:
    """Inches that draw ``pixels`` mosaic pixels at :data:`PX_PER_CELL` each (at least ``least``)."""
    return min(MAX_INCHES, max(least, PX_PER_CELL * pixels / DPI))


def _title(fig, text: str, note: str | None) -> None:
    fig.suptitle(text, fontsize=11)
    if note:  # a second line, in red: what makes the figure not what it seems
        fig.text(0.5, 1.0, note, ha="center", va="bottom", color="#b00000", fontsize=10, fontweight="bold")


def mosaic(tiles: np.ndarray, cols: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """(n, h, w[, c]) tiles -> one (rows*(h+gap)-gap, cols*(w+gap)-gap[, c]) array, row-major, gaps filled."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:]), fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return out


def plot_mean_distance(distance, path, image_size: int | None = None, note: str | None = None) -> Path:
    """Fig. 7 right: one point per head, network depth on x, mean attention distance (pixels) on y
    (from 0 to ``image_size`` when given, else to just above the largest value)."""
    plt = _plt()
    d = np.asarray(distance, dtype=np.float64)
    depth, heads = d.shape
    fig, ax = plt.subplots(layout="constrained", figsize=(max(6.4, 0.35 * depth + 2), 4.8))
    _title(fig, "mean attention distance per head and block", note)
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, heads))
    for h in range(heads):
        ax.scatter(np.arange(1, depth + 1), d[:, h], s=10, color=colors[h], label=f"head {h + 1}" if heads <= 6 else None)
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xlim(0.5, depth + 0.5)
    ax.set_ylim(0, image_size if image_size else max(float(np.nanmax(d)) * 1.1, 1.0))
    if heads <= 6:
        ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pos_similarity(sim, path, note: str | None = None) -> Path:
    """Fig. 7 centre: tile (i, j) shows the cosine similarity of patch (i, j)'s position embedding to all others.

    A 14 x 14 grid is a 209 x 209 mosaic of 196 x 196 values: drawn at
    :data:`PX_PER_CELL` pixels per value (plus the colour bar)."""
    plt = _plt()
    s = np.asarray(sim, dtype=np.float64)
    gh, gw = s.shape[:2]
    image = mosaic(s.reshape(gh * gw, gh, gw), cols=gw, gap=1)
    width = _inches(image.shape[1], 6.0)
    fig, ax = plt.subplots(layout="constrained", figsize=(width * 1.25, width * image.shape[0] / image.shape[1] + 0.8))
    _title(fig, "position-embedding similarity: each tile is one patch's cosine similarity to all", note)
    im = ax.imshow(image, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    return _save(fig, path)


def plot_rollout(image, rollout, path, title: str = "", note: str | None = None) -> Path:
    """Fig. 6: the image and the rollout map (upsampled, normalised to [0, 1]) laid over it."""
    plt = _plt()
    img = np.clip(np.asarray(image, dtype=np.float64), 0, 1)  # (H, W, 3) in [0, 1]
    r = np.asarray(rollout, dtype=np.float64)
    r = (r - r.min()) / (r.max() - r.min()) if r.max() > r.min() else np.zeros_like(r)
    h, w = img.shape[:2]
    rows = np.minimum((np.arange(h) * r.shape[0]) // h, r.shape[0] - 1)
    cols = np.minimum((np.arange(w) * r.shape[1]) // w, r.shape[1] - 1)
    mask = r[rows][:, cols]
    fig, axes = plt.subplots(1, 2, layout="constrained", figsize=(10.0, 5.2))
    _title(fig, "attention rollout" + (f": {title}" if title else ""), note)
    axes[0].imshow(img)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(img * (0.25 + 0.75 * mask[..., None]))
    axes[1].imshow(mask, cmap="inferno", alpha=0.35, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    axes[1].set_title("rollout laid over the input", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def plot_filter_components(components, ratio, path, note: str | None = None) -> Path:
    """Fig. 7 left: the principal components of the patch-embedding filters as RGB patches."""
    plt = _plt()
    c = np.asarray(components, dtype=np.float64)  # (k, C, p, p)
    k = c.shape[0]
    tiles = np.moveaxis(c, 1, -1)
    if tiles.shape[-1] not in (1, 3):
        tiles = tiles[..., :1]
    lo = tiles.reshape(k, -1).min(1)[:, None, None, None]
    hi = tiles.reshape(k, -1).max(1)[:, None, None, None]
    tiles = (tiles - lo) / np.where(hi > lo, hi - lo, 1.0)
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    cols = min(7, k)
    image = mosaic(tiles, cols=cols, gap=1, fill=1.0)
    width = _inches(image.shape[1], 6.0)
    fig, ax = plt.subplots(layout="constrained", figsize=(width, width * image.shape[0] / image.shape[1] + 0.9))
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    explained = float(np.sum(np.asarray(ratio)))
    _title(fig, f"patch-embedding filters: top {k} principal components ({explained:.0%} of variance)", note)
    return _save(fig, path)
