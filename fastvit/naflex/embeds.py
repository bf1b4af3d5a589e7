"""NaFlex embeddings: linear patch projection, a position embedding resampled per image grid
(learned 2-D grid, or factorised rows + columns), then class / register tokens at the head of
each image's sequence. timm's ``NaFlexEmbeds`` parameter names (``proj``, ``pos_embed`` or
``pos_embed_y`` / ``pos_embed_x``, ``cls_token``, ``reg_token``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .pack import Packed


@dataclass(frozen=True)
class TokenLayout:
    """Where each image's tokens lie once the prefix tokens are in: image ``s`` is rows
    ``cu_tokens[s]:cu_tokens[s + 1]``, its prefix first. ``seg`` (T,) the image of each patch,
    ``patch_rows`` (T,) each patch's row, ``prefix_rows`` (S * prefix,) the prefix tokens' rows."""

    cu_tokens: torch.Tensor
    max_tokens: int
    seg: torch.Tensor
    lens: torch.Tensor
    patch_rows: torch.Tensor
    prefix_rows: torch.Tensor
    num_prefix: int
    grid_sizes: tuple[tuple[int, int], ...]

    @property
    def num_images(self) -> int:
        return len(self.grid_sizes)


def token_layout(grid_sizes, num_prefix: int, device, seqlens=None) -> TokenLayout:
    """The :class:`TokenLayout` of images with these patch grids (in order) and patch counts
    (``seqlens``, default the grids' sizes), ``num_prefix`` tokens each."""
    s = len(grid_sizes)
    seqlens = [h * w for h, w in grid_sizes] if seqlens is None else list(seqlens)
    lens = torch.tensor(seqlens, device=device)
    seg = torch.repeat_interleave(torch.arange(s, device=device), lens)
    cu_tokens = torch.tensor([0, *torch.tensor(seqlens).add(num_prefix).cumsum(0).tolist()], dtype=torch.int32,
                             device=device)
    patch_rows = torch.arange(seg.numel(), device=device) + num_prefix * (seg + 1)
    prefix_rows = (cu_tokens[:-1].long()[:, None] + torch.arange(num_prefix, device=device)).reshape(-1)
    return TokenLayout(cu_tokens, max(seqlens) + num_prefix, seg, lens, patch_rows, prefix_rows, num_prefix,
                       tuple(grid_sizes))


class NaFlexEmbeds(nn.Module):
    """Packed patches (T, P*P*C) -> tokens (T + S * prefix, D), prefix tokens first in each image."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, class_token: bool, reg_tokens: int,
                 pos_embed: str, grid_size: tuple[int, int], interp_mode: str, ar_preserving: bool):
        super().__init__()
        self.patch_size, self.in_chans, self.embed_dim = patch_size, in_chans, embed_dim
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.interp_mode, self.ar_preserving = interp_mode, ar_preserving
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.proj = nn.Linear(patch_size * patch_size * in_chans, embed_dim)
        h, w = grid_size
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, h, w, embed_dim))
            self._grid_table = self._learned_table
        else:
            self.pos_embed_y = nn.Parameter(torch.zeros(1, h, embed_dim))
            self.pos_embed_x = nn.Parameter(torch.zeros(1, w, embed_dim))
            self._grid_table = self._factorized_table
        self.reset_parameters()

    def reset_parameters(self):
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        for name in ("pos_embed", "pos_embed_y", "pos_embed_x"):
            if name in self._parameters:
                nn.init.normal_(self._parameters[name], std=0.02)

    def _learned_table(self, h: int, w: int, dtype) -> torch.Tensor:
        """The learned grid resampled to (h, w) as timm does: antialiased interpolation in fp32 to
        (h, w), or to a (max, max) square cropped to (h, w) when aspect-preserving; (h * w, D)."""
        pos = self.pos_embed
        gh, gw = pos.shape[1:3]
        if (h, w) == (gh, gw):
            return pos.reshape(gh * gw, -1).to(dtype)
        size = (max(h, w),) * 2 if self.ar_preserving else (h, w)
        grid = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=size, mode=self.interp_mode, align_corners=False,
                             antialias=True)
        return grid[0, :, :h, :w].flatten(1).transpose(0, 1).to(dtype)

    def _factorized_table(self, h: int, w: int, dtype) -> torch.Tensor:
        """Rows + columns, each resampled linearly (to the longer side when aspect-preserving); (h * w, D)."""
        ly, lx = (max(h, w),) * 2 if self.ar_preserving else (h, w)
        y = _resample_1d(self.pos_embed_y, ly, dtype)[:h]
        x = _resample_1d(self.pos_embed_x, lx, dtype)[:w]
        return (y[:, None] + x[None]).reshape(h * w, -1)

    def position_rows(self, packed: Packed, layout: TokenLayout, dtype) -> torch.Tensor:
        """(T, D): each patch's position embedding, one resampled table per distinct grid size."""
        grids = packed.grid_sizes
        unique = list(dict.fromkeys(grids))
        tables = [self._grid_table(h, w, dtype) for h, w in unique]
        starts, at = {}, 0
        for g, t in zip(unique, tables):
            starts[g] = at
            at += t.shape[0]
        table = tables[0] if len(tables) == 1 else torch.cat(tables)
        device = packed.coords.device
        base = torch.tensor([starts[g] for g in grids], device=device)[layout.seg]
        width = torch.tensor([g[1] for g in grids], device=device)[layout.seg]
        return table[base + packed.coords[:, 0] * width + packed.coords[:, 1]]

    def forward(self, packed: Packed, layout: TokenLayout) -> torch.Tensor:
        x = self.proj(packed.patches)
        x = x + self.position_rows(packed, layout, x.dtype)
        if not self.num_prefix_tokens:
            return x
        prefix = torch.cat([t for t in (self.cls_token, self.reg_token) if t is not None], dim=1)
        s, n = layout.num_images, self.num_prefix_tokens
        rows = torch.cat([prefix.to(x.dtype).expand(s, -1, -1).reshape(s * n, -1), x])
        order = torch.empty(rows.shape[0], dtype=torch.long, device=x.device)
        order[layout.prefix_rows] = torch.arange(s * n, device=x.device)
        order[layout.patch_rows] = torch.arange(s * n, rows.shape[0], device=x.device)
        return rows[order]


def _resample_1d(table: torch.Tensor, length: int, dtype) -> torch.Tensor:
    if length == table.shape[1]:
        return table[0].to(dtype)
    out = F.interpolate(table.permute(0, 2, 1).float(), size=length, mode="linear", align_corners=False)
    return out[0].transpose(0, 1).to(dtype)
