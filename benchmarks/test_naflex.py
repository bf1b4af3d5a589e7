"""Native-resolution batches: one packed batch against padding + masking and against one image at a time.

The batch: 50 images whose sides are drawn between 128 and 512 px (whole 16 px patches, seed 0),
:func:`fastvit.token_count.mixed_sizes`. Each mode encodes all 50 with the same NaFlexVit weights
(``naflexvit_base_patch16_siglip``, bf16, inference):

- ``packed``: ``model(fastvit.naflex.pack(images))``, fastvit's variable-length attention: no padding
  token, no mask.
- ``padded-timm``: timm's own NaFlexVit on timm's padded dict (every image padded to the longest,
  an attention mask) -- what timm's NaFlex pipeline runs (needs timm).
- ``padded-hf``: transformers' ``Siglip2VisionModel`` (SDPA) on its processor's padded inputs, the
  weights exported by :mod:`fastvit.checkpoints.hf_siglip2` (needs transformers).
- ``per-image``: fastvit's model on each image alone (no padding, 50 small launches).

Each record's ``extra_info`` carries images/s, peak memory, the tokens each mode computes
(:func:`fastvit.token_count.count_tokens`) and the environment. Without a GPU the same cases run as a
smoke check at toy sizes (a 1-block model, 4 small images): a test of the harness, never a
measurement.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fastvit import bench
from fastvit.token_count import count_tokens, mixed_sizes

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
MODEL = "naflexvit_base_patch16_siglip"
PATCH = 16
MODES = ("packed", "padded-timm", "padded-hf", "per-image")
# a GPU: ViT-B in bf16 on 50 images of 128..512 px; the CPU smoke: toy sizes, fp32
if HAS_CUDA:
    NUM_IMAGES, SIDES, DTYPE, ROUNDS, ARGS = 50, (128, 512), torch.bfloat16, (10, 3), {}
else:
    NUM_IMAGES, SIDES, DTYPE, ROUNDS = 4, (16, 64), torch.float32, (1, 1)
    ARGS = dict(embed_dim=64, depth=1, num_heads=2, pos_embed_grid_size=(4, 4))


def batch_sizes() -> list[tuple[int, int]]:
    return mixed_sizes(NUM_IMAGES, SIDES, PATCH, seed=0)


@pytest.fixture(scope="module")
def workload():
    from fastvit.naflex import create_naflex, pack

    torch.manual_seed(0)
    model = create_naflex(MODEL, num_classes=0, pos_embed_interp_mode="bilinear", **ARGS)
    model = model.to(DEVICE, DTYPE).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, h, w, generator=g).to(DEVICE, DTYPE) for h, w in batch_sizes()]
    return model, images, pack(images, patch_size=PATCH)


def _timm_runner(model, images):
    timm = pytest.importorskip("timm")
    from fastvit.naflex.packing import patchify

    ref = timm.create_model(MODEL, pretrained=False, num_classes=0, pos_embed_interp_mode="bilinear", **ARGS)
    ref.load_state_dict(model.state_dict(), strict=True)
    ref = ref.to(DEVICE, DTYPE).eval()
    seqs = [patchify(im, PATCH) for im in images]
    length = max(s.shape[0] for s in seqs)
    patches = torch.zeros(len(seqs), length, seqs[0].shape[1], device=DEVICE, dtype=DTYPE)
    coord = torch.zeros(len(seqs), length, 2, device=DEVICE, dtype=torch.long)
    valid = torch.zeros(len(seqs), length, device=DEVICE, dtype=torch.bool)
    for i, (im, s) in enumerate(zip(images, seqs)):
        h, w = im.shape[1] // PATCH, im.shape[2] // PATCH
        patches[i, :s.shape[0]], valid[i, :s.shape[0]] = s, True
        coord[i, :s.shape[0]] = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 2)
    batch = {"patches": patches, "patch_coord": coord, "patch_valid": valid}
    return lambda: ref(batch)


def _hf_runner(model, images):
    transformers = pytest.importorskip("transformers")
    from fastvit import to_hf_config, to_hf_state_dict
    from fastvit.naflex.packing import patchify

    cfg = {k: v for k, v in to_hf_config(model).items() if k not in ("model_type", "architectures")}
    hf = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**cfg, attn_implementation="sdpa"))
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    hf = hf.to(DEVICE, DTYPE).eval()
    seqs = [patchify(im, PATCH) for im in images]
    length = max(s.shape[0] for s in seqs)
    pixel_values = torch.zeros(len(seqs), length, seqs[0].shape[1], device=DEVICE, dtype=DTYPE)
    mask = torch.zeros(len(seqs), length, device=DEVICE, dtype=torch.long)
    for i, s in enumerate(seqs):
        pixel_values[i, :s.shape[0]], mask[i, :s.shape[0]] = s, 1
    shapes = torch.tensor([(im.shape[1] // PATCH, im.shape[2] // PATCH) for im in images], device=DEVICE)
    return lambda: hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes).pooler_output


def _runner(mode, workload):
    model, images, packed = workload
    if mode == "packed":
        return lambda: model(packed)
    if mode == "per-image":
        return lambda: torch.cat([model(im[None]) for im in images])
    if mode == "padded-timm":
        return _timm_runner(model, images)
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    return _hf_runner(model, images)


@pytest.mark.parametrize("mode", MODES)
def test_naflex_batch(benchmark, mode, workload, device):
    model, images, _ = workload
    run = _runner(mode, workload)
    counts = count_tokens([tuple(im.shape[1:]) for im in images], PATCH, num_prefix_tokens=model.cfg.num_prefix_tokens)
    computed = {"packed": counts.packed, "per-image": counts.packed}.get(mode, counts.padded)
    rounds, warmup = ROUNDS
    with torch.inference_mode():
        got, want = run().float(), model(workload[2]).float()  # every mode encodes the same images
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err <= (1e-4 if DTYPE == torch.float32 else 5e-2), f"{mode}: relative error {err:.3g} against packed"
        for _ in range(warmup):
            run()
        if HAS_CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()  # weights (and inputs) held before the timed calls

        def timed():
            run()
            if HAS_CUDA:
                torch.cuda.synchronize()

        benchmark.pedantic(timed, rounds=rounds, iterations=1)
    seconds = benchmark.stats.stats.mean
    benchmark.group = f"naflex {MODEL} {len(images)} images"
    benchmark.extra_info.update({
        "mode": mode, "model": MODEL, "dtype": str(DTYPE).removeprefix("torch."), "images": len(images),
        "img_per_s": len(images) / seconds, "tokens_computed": computed, "max_rel_err_vs_packed": err,
        **counts.as_dict(),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if HAS_CUDA else None,
        "peak_memory_above_resident_bytes": torch.cuda.max_memory_allocated() - resident if HAS_CUDA else None,
        "smoke": not HAS_CUDA, "environment": bench.environment(device),
    })
