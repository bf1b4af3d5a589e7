"""What a NaFlexVit takes and gives back: every input as a :class:`Packed` batch, and the packed
rows back in the input's layout (timm's (B, N, D) tokens, timm's padded dict, or packed rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.linear import autocast_dtype
from .embeds import TokenLayout, token_layout
from .pack import Packed, grid_coords, packed_from_padded


@dataclass(frozen=True)
class InputForm:
    """``kind``: "images", "padded" or "packed"; for "padded", the batch size, length and ``patch_valid``."""

    kind: str
    batch: int = 0
    length: int = 0
    patch_valid: torch.Tensor | None = None


def _check_dtype(model, t: torch.Tensor, what: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{what} must be floating point, got dtype {t.dtype}")
    w = model.embeds.proj.weight
    if t.device != w.device:
        raise ValueError(f"{what} is on {t.device} but the model is on {w.device}; move one of them")
    if t.dtype != w.dtype and autocast_dtype(t) is None:
        raise TypeError(f"{what} dtype {t.dtype} does not match the model's {w.dtype}; cast one, or run under torch.autocast")


def _images_packed(model, x: torch.Tensor) -> Packed:
    p, c = model.patch_size, model.in_chans
    if x.ndim != 4:
        raise ValueError(f"expected an image batch (B, {c}, H, W), got shape {tuple(x.shape)}")
    b, ch, h, w = x.shape
    if b == 0:
        raise ValueError(f"expected a non-empty batch, got shape {tuple(x.shape)}")
    if ch != c:
        raise ValueError(f"expected {c} input channels, got {ch} (input shape {tuple(x.shape)})")
    if h < p or w < p:
        raise ValueError(f"image size {h}x{w} is smaller than one {p}x{p} patch")
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p} (timm's NaFlexVit needs whole "
                         "patches); resize, or pack the images with fastvit.naflex.pack(..., max_patches=)")
    _check_dtype(model, x, "the image batch")
    gh, gw = h // p, w // p
    patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b * gh * gw, p * p * c)
    coords = grid_coords(gh, gw, x.device).repeat(b, 1)
    cu = torch.arange(b + 1, dtype=torch.int32, device=x.device) * (gh * gw)
    return Packed(patches, coords, cu, ((gh, gw),) * b, gh * gw, p, (gh * gw,) * b)


def _check_packed(model, packed: Packed) -> Packed:
    p, c = model.patch_size, model.in_chans
    if packed.patch_size is not None and packed.patch_size != p:
        raise ValueError(f"the batch was packed with patch_size={packed.patch_size}, the model's is {p}")
    if packed.patches.ndim != 2 or packed.patches.shape[1] != p * p * c:
        raise ValueError(f"expected patches (T, {p * p * c}) = patch_size {p} x {p} x {c} channels, got "
                         f"{tuple(packed.patches.shape)} (wrong channel count or patch size?)")
    _check_dtype(model, packed.patches, "packed.patches")
    return packed


def as_packed(model, x, patch_coord=None, patch_valid=None) -> tuple[Packed, InputForm]:
    """Any input the model takes as one packed batch, and how to give the outputs back."""
    if isinstance(x, Packed):
        return _check_packed(model, x), InputForm("packed")
    if isinstance(x, dict):
        missing = [k for k in ("patches", "patch_coord", "patch_valid") if k not in x]
        if missing:
            raise ValueError(f"a NaFlex dict batch needs 'patches', 'patch_coord' and 'patch_valid'; missing {missing}")
        x, patch_coord, patch_valid = x["patches"], x["patch_coord"], x["patch_valid"]
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"expected an image batch (B, C, H, W), timm's NaFlex dict or a fastvit.naflex.Packed, "
                        f"got {type(x).__name__}")
    elif patch_coord is None:
        return _images_packed(model, x), InputForm("images", batch=x.shape[0])
    if patch_valid is None:
        raise ValueError("patch_valid is required with patch_coord (timm's NaFlex mode)")
    packed = _check_packed(model, packed_from_padded(x, patch_coord, patch_valid))
    b, n = x.shape[:2]
    return packed, InputForm("padded", b, n, patch_valid)


def _seq_grids(valid: torch.Tensor) -> tuple[tuple[int, int], ...]:
    return tuple((1, int(n)) for n in valid.sum(1).tolist())  # only the lengths matter here


def _rows_for(valid: torch.Tensor, layout: TokenLayout, num_prefix: int) -> torch.Tensor:
    b, n = valid.shape
    width = num_prefix + n
    nz = valid.nonzero()
    rows = torch.empty(int(layout.cu_tokens[-1]), dtype=torch.long, device=valid.device)
    rows[layout.patch_rows] = nz[:, 0] * width + num_prefix + nz[:, 1]
    if num_prefix:
        img = torch.arange(b, device=valid.device)[:, None]
        rows[layout.prefix_rows] = (img * width + torch.arange(num_prefix, device=valid.device)).reshape(-1)
    return rows


def from_tokens(rows: torch.Tensor, layout: TokenLayout, form: InputForm, split_prefix: bool = False,
                nchw: bool = False):
    """Packed rows (T', D) back in the input's layout; with ``split_prefix``, (patch tokens, prefix tokens)."""
    d, npre, s = rows.shape[-1], layout.num_prefix, layout.num_images
    if form.kind == "images":
        t = rows.view(s, -1, d)
        if not split_prefix:
            return t
        spatial = t[:, npre:]
        if nchw:
            gh, gw = layout.grid_sizes[0]
            spatial = spatial.reshape(s, gh, gw, d).permute(0, 3, 1, 2).contiguous()
        return spatial, t[:, :npre]
    if form.kind == "padded":
        index = _rows_for(form.patch_valid.bool(), layout, npre)
        out = rows.new_zeros(form.batch * (npre + form.length), d).index_copy(0, index, rows)
        out = out.view(form.batch, npre + form.length, d)
        if split_prefix:
            return out[:, npre:], out[:, :npre]
        return {"patches": out, "patch_valid": form.patch_valid}
    if split_prefix:
        return rows[layout.patch_rows], rows[layout.prefix_rows].view(s, npre, d)
    return rows


def to_tokens(model, x, patch_valid=None, packed: Packed | None = None) -> tuple[torch.Tensor, TokenLayout]:
    """``forward_features``'s output (tokens (B, N, D), timm's dict, or packed rows with their ``packed``)
    as packed rows and their layout."""
    npre = model.num_prefix_tokens
    if isinstance(x, dict):
        x, patch_valid = x["patches"], x.get("patch_valid", patch_valid)
    if isinstance(patch_valid, Packed):
        packed, patch_valid = patch_valid, None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected tokens as forward_features returns them, got {type(x).__name__}")
    if packed is not None:
        if x.ndim != 2:
            raise ValueError(f"packed tokens must be (T, D) rows, got shape {tuple(x.shape)}")
        return x, token_layout(packed.grid_sizes, npre, x.device, packed.seqlens)
    if x.ndim != 3 or x.shape[-1] != model.embed_dim or x.shape[1] <= npre:
        raise ValueError(f"expected tokens (B, {npre} + N, {model.embed_dim}), got shape {tuple(x.shape)}")
    b, n = x.shape[0], x.shape[1] - npre
    if patch_valid is None:
        layout = token_layout(((1, n),) * b, npre, x.device)
        return x.reshape(-1, x.shape[-1]), layout
    valid = patch_valid.bool()
    if tuple(valid.shape) != (b, n):
        raise ValueError(f"patch_valid must be (B, L) = {(b, n)} for tokens {tuple(x.shape)}, got {tuple(valid.shape)}")
    layout = token_layout(_seq_grids(valid), npre, x.device)
    return x.reshape(-1, x.shape[-1])[_rows_for(valid, layout, npre)], layout
