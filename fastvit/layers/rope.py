"""2-D rotary position embeddings (RoPE) of timm's Eva family, and applying them to q and k.

An embedding is a table ``(N, 2 * head_dim)``: the sines then the cosines of each patch's
angles, laid out for one of two rotations of a head's channels:

- interleaved (EVA, PE, RoPE-ViT): channel pairs (0, 1), (2, 3), ... rotate together;
  the table repeats each angle twice in a row (``a0 a0 a1 a1 ...``);
- half (DINOv3, ``rope_rotate_half``): channel ``i`` pairs with ``i + D/2``; the table
  tiles the angles (``a0 a1 ... a0 a1 ...``).

:func:`apply_rope` rotates ``x`` by such a table (``x cos + rot(x) sin``), and
:func:`rope_prefix` leaves the prefix tokens (class, registers) as they are;
:func:`rope_pairs` cuts a table to the per-pair ``sin`` / ``cos`` the fused rotary attention
kernel takes (exact: both channels of a pair hold one angle, :func:`pairs_share_angles`). Three
generators, each a module whose ``embed(grid)`` gives the table of an (H, W) patch grid
(the mixed one gives one table per block and head), all with timm's numerics:

- :class:`RopeCat` (timm's ``RotaryEmbeddingCat``, EVA-02 / PE / RoPE-ViT axial):
  positions ``arange(s) + grid_offset`` (scaled by ``ref_feat_shape / s`` when given),
  frequencies ``temperature ** (-k / (D/4))``;
- :class:`RopeMixed` (timm's ``RotaryEmbeddingMixed``, RoPE-ViT mixed): learned
  per-block, per-head 2-D frequencies ``freqs`` (2, depth, heads, D/2), integer positions;
- :class:`RopeDinoV3` (timm's ``RotaryEmbeddingDinoV3``): patch centres normalized to
  [-1, 1] per axis, periods ``temperature ** (2k / (D/2))``, half layout.

A model with a fixed input size caches its grid's table (``set_grid`` recomputes it, as
timm's ``update_feat_shape``); with ``dynamic_img_size`` it builds the table of each
input's grid (``cached=False``), as timm does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ROPE_TYPES = ("cat", "mixed", "dinov3")


def rot_interleaved(x: torch.Tensor) -> torch.Tensor:
    """``[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]``."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def rot_half(x: torch.Tensor) -> torch.Tensor:
    """``[a, b] -> [-b, a]`` over the two halves of the last dimension."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: torch.Tensor, emb: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Rotate ``x`` (..., N, D) by the table ``emb`` (..., N, 2D) = [sin, cos]."""
    sin, cos = emb.chunk(2, -1)
    return x * cos + (rot_half(x) if half else rot_interleaved(x)) * sin


def rope_prefix(x: torch.Tensor, emb: torch.Tensor, num_prefix: int, half: bool, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (B, H, prefix + N, D) with its last N tokens rotated, the prefix left as is (timm's order)."""
    rotated = apply_rope(x[:, :, num_prefix:], emb, half)
    return torch.cat([x[:, :, :num_prefix], rotated], dim=2).to(dtype)


# the layout of each generator's table: True when it tiles the angles (half), False when it repeats each twice
TABLE_HALF = {"cat": False, "mixed": False, "dinov3": True}


def rope_pairs(emb: torch.Tensor, half: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pair tables ``sin``, ``cos`` (..., N, D/2) of a full table ``emb`` (..., N, 2D) = [sin, cos]:
    the even channels of an interleaved table (pairs (2i, 2i+1)), the first half of a half one (pairs
    (i, i + D/2)); what :func:`fastvit.kernels.rope_attention` takes. Exact where each pair's two channels
    hold the same angle, as the three generators' tables do (:func:`pairs_share_angles`)."""
    sin, cos = emb.chunk(2, -1)
    if half:
        d = sin.shape[-1] // 2
        return sin[..., :d].contiguous(), cos[..., :d].contiguous()
    return sin[..., 0::2].contiguous(), cos[..., 0::2].contiguous()


def pairs_share_angles(emb: torch.Tensor, half: bool = False) -> bool:
    """Whether both channels of every pair of ``emb``'s layout hold the same sine and cosine."""
    d = emb.shape[-1] // 2
    if d % 2:
        return False
    if half:
        return torch.equal(emb[..., : d // 2], emb[..., d // 2: d]) and torch.equal(emb[..., d: d + d // 2], emb[..., d + d // 2:])
    return torch.equal(emb[..., 0::2], emb[..., 1::2])


def _grid_pair(grid) -> list[int]:
    h, w = (int(v) for v in grid)
    return [h, w]


class RopeCat(nn.Module):
    """EVA's axial RoPE (interleaved layout); see the module notes. ``dim`` is the head dim."""

    def __init__(self, dim: int, temperature: float = 10000.0, grid=None, ref_feat_shape=None,
                 grid_offset: float = 0.0, grid_indexing: str = "ij"):
        super().__init__()
        if grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rope grid_indexing must be 'ij' or 'xy', got {grid_indexing!r}")
        self.dim, self.temperature = dim, temperature
        self.ref_feat_shape = None if ref_feat_shape is None else _grid_pair(ref_feat_shape)
        self.grid_offset, self.grid_indexing = grid_offset, grid_indexing
        n = dim // 4
        exp = torch.arange(0, n, 1, dtype=torch.int64).to(torch.float32) / n
        self.register_buffer("bands", 1.0 / (temperature ** exp), persistent=False)
        self.grid = None if grid is None else _grid_pair(grid)
        self.register_buffer("cached", None if grid is None else self.embed(self.grid), persistent=False)

    def embed(self, grid) -> torch.Tensor:
        shape = _grid_pair(grid)
        ref = self.ref_feat_shape
        if self.grid_indexing == "xy":
            shape = shape[::-1]
            ref = None if ref is None else ref[::-1]
        dev = self.bands.device
        t = [torch.arange(s, device=dev, dtype=torch.int64).to(torch.float32) + self.grid_offset for s in shape]
        if ref is not None:  # EVA's rescaling to the pretraining grid
            t = [x / f * r for x, f, r in zip(t, shape, ref)]
        pos = torch.stack(torch.meshgrid(t, indexing=self.grid_indexing), dim=-1).unsqueeze(-1) * self.bands
        n = pos.shape[0] * pos.shape[1]
        sin = pos.sin().reshape(n, -1).repeat_interleave(2, -1)
        cos = pos.cos().reshape(n, -1).repeat_interleave(2, -1)
        return torch.cat([sin, cos], -1).to(self.bands.dtype)

    def set_grid(self, grid):
        if self.grid is not None and _grid_pair(grid) != self.grid:
            self.grid = _grid_pair(grid)
            self.cached = self.embed(self.grid)

    def forward(self, grid=None) -> torch.Tensor:
        return self.cached if grid is None else self.embed(grid)


class RopeDinoV3(nn.Module):
    """DINOv3's RoPE (half layout, normalized patch centres); see the module notes."""

    def __init__(self, dim: int, temperature: float = 100.0, grid=None, grid_indexing: str = "ij"):
        super().__init__()
        if grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rope grid_indexing must be 'ij' or 'xy', got {grid_indexing!r}")
        self.dim, self.temperature, self.grid_indexing = dim, float(temperature), grid_indexing
        n = dim // 4
        exponents = 2.0 * torch.arange(n, dtype=torch.float32) / (dim // 2)
        self.register_buffer("periods", self.temperature ** exponents, persistent=False)
        self.grid = None if grid is None else _grid_pair(grid)
        self.register_buffer("cached", None if grid is None else self.embed(self.grid), persistent=False)

    def coords(self, h: int, w: int) -> torch.Tensor:
        """(h*w, 2) patch centres in [-1, 1], (row, col) per patch in row-major order."""
        ch = torch.arange(0.5, h, dtype=torch.float32) / float(h)
        cw = torch.arange(0.5, w, dtype=torch.float32) / float(w)
        if self.grid_indexing == "xy":
            gw, gh = torch.meshgrid(cw, ch, indexing="xy")
            c = torch.stack([gh, gw], dim=-1)
        else:
            c = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1)
        return 2.0 * c.flatten(0, 1) - 1.0

    def embed(self, grid) -> torch.Tensor:
        h, w = _grid_pair(grid)
        coords = self.coords(h, w)[:, :, None].to(device=self.periods.device, dtype=self.periods.dtype)
        angles = (2 * math.pi * coords / self.periods[None, None, :]).flatten(1).tile(2)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def set_grid(self, grid):
        if self.grid is not None and _grid_pair(grid) != self.grid:
            self.grid = _grid_pair(grid)
            self.cached = self.embed(self.grid)

    def forward(self, grid=None) -> torch.Tensor:
        return self.cached if grid is None else self.embed(grid)


def init_mixed_freqs(head_dim: int, depth: int, num_heads: int, temperature: float = 10.0) -> torch.Tensor:
    """RoPE-Mixed's initial frequencies (2, depth, heads, head_dim/2): axial magnitudes turned by a
    random angle per block and head (timm's ``init_random_2d_freqs``)."""
    mag = 1.0 / (temperature ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim))
    mag = mag[None, None]
    angles = torch.rand(depth, num_heads, 1) * 2 * torch.pi
    fx = torch.cat([mag * torch.cos(angles), mag * torch.cos(angles + torch.pi / 2)], dim=-1)
    fy = torch.cat([mag * torch.sin(angles), mag * torch.sin(angles + torch.pi / 2)], dim=-1)
    return torch.stack([fx, fy], dim=0)


class RopeMixed(nn.Module):
    """RoPE-Mixed (Heo et al. 2024): learned frequencies ``freqs`` per block and head.
    ``embed(grid)`` is (depth, heads, N, 2 * head_dim); block i takes entry i."""

    def __init__(self, dim: int, depth: int, num_heads: int, temperature: float = 10.0, grid=None,
                 grid_indexing: str = "xy"):
        super().__init__()
        head_dim = dim // num_heads
        if head_dim % 4:
            raise ValueError(f"mixed RoPE needs a head dim divisible by 4, got {head_dim}")
        if grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rope grid_indexing must be 'ij' or 'xy', got {grid_indexing!r}")
        self.depth, self.num_heads, self.temperature, self.grid_indexing = depth, num_heads, temperature, grid_indexing
        self.freqs = nn.Parameter(init_mixed_freqs(head_dim, depth, num_heads, temperature))
        self.grid = None if grid is None else _grid_pair(grid)

    def positions(self, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) integer positions of the patches, row-major."""
        shape = _grid_pair(grid)
        if self.grid_indexing == "xy":
            shape = shape[::-1]
        dev = self.freqs.device
        a, b = torch.meshgrid(torch.arange(shape[0], device=dev, dtype=torch.float32),
                              torch.arange(shape[1], device=dev, dtype=torch.float32), indexing=self.grid_indexing)
        return a.flatten(), b.flatten()

    def embed(self, grid) -> torch.Tensor:
        t_x, t_y = self.positions(grid)
        dtype, freqs = self.freqs.dtype, self.freqs.float()
        angles = t_x.unsqueeze(-1) @ freqs[0].unsqueeze(-2) + t_y.unsqueeze(-1) @ freqs[1].unsqueeze(-2)
        sin = torch.sin(angles).repeat_interleave(2, -1)
        cos = torch.cos(angles).repeat_interleave(2, -1)
        return torch.cat([sin, cos], dim=-1).to(dtype)

    def set_grid(self, grid):
        if self.grid is not None:
            self.grid = _grid_pair(grid)

    def forward(self, grid=None) -> torch.Tensor:
        if grid is None:
            if self.grid is None:
                raise ValueError("this RoPE has no fixed grid: pass the patch grid")
            grid = self.grid
        return self.embed(grid)

    def no_weight_decay(self) -> set[str]:
        return {"freqs"}


def create_rope(rope_type: str, embed_dim: int, num_heads: int, depth: int, grid, temperature: float,
                grid_indexing: str, grid_offset: float = 0.0, ref_feat_shape=None) -> nn.Module:
    """The RoPE module timm's Eva builds for ``rope_type`` (``grid`` None: per-input grids)."""
    head_dim = embed_dim // num_heads
    if rope_type == "cat":
        return RopeCat(head_dim, temperature, grid, ref_feat_shape, grid_offset, grid_indexing)
    if rope_type == "mixed":
        return RopeMixed(embed_dim, depth, num_heads, temperature, grid, grid_indexing)
    if rope_type == "dinov3":
        return RopeDinoV3(head_dim, temperature, grid, grid_indexing)
    raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
