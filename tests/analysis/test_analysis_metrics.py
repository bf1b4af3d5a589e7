"""The paper's analyses against independent implementations and constructed cases with known answers."""

import itertools
import math

import numpy as np
import pytest
import torch

import fastvit
from fastvit.analysis import (
    attention_maps,
    attention_rollout,
    mean_attention_distance,
    patch_embed_components,
    pos_embed_similarity,
)


def tiny(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, attn_impl="eager")
    cfg.update(kw)
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**cfg)).eval()


def make_uniform(model):
    """Zero q and k projections: every score is 0, so every attention row is uniform."""
    d = model.cfg.embed_dim
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * d].zero_()
            block.attn.qkv.bias[: 2 * d].zero_()
    return model


def centres(gh, gw, sh, sw):
    return [((r + 0.5) * sh, (c + 0.5) * sw) for r in range(gh) for c in range(gw)]


# -- mean attention distance ------------------------------------------------------------


def test_uniform_attention_distance_is_mean_pairwise_patch_distance():
    model = make_uniform(tiny(img_size=(32, 48), dynamic_img_size=True))
    x = torch.randn(2, 3, 24, 40)  # 3 x 5 grid of 8-px patches
    pts = centres(3, 5, 8, 8)
    expected = np.mean([math.dist(a, b) for a in pts for b in pts])
    got = mean_attention_distance(model, x)
    assert got.shape == (3, 2)
    torch.testing.assert_close(got, torch.full((3, 2), float(expected)), atol=1e-4, rtol=1e-6)
    # raw weights: the 15 patch keys hold 15/16 of each row, the class key the rest at no distance
    raw = mean_attention_distance(model, x, renormalize=False)
    torch.testing.assert_close(raw, torch.full((3, 2), float(expected) * 15 / 16), atol=1e-4, rtol=1e-6)


def loop_mean_distance(maps, grid, stride, prefix):
    """Plain-numpy loops: per head, sum_j w_ij d_ij / sum_j w_ij over patch keys, averaged over queries and images."""
    pts = centres(*grid, *stride)
    out = np.zeros((len(maps), maps[0].shape[1]))
    for layer, m in enumerate(maps):
        a = m.double().numpy()
        for h in range(a.shape[1]):
            vals = []
            for b in range(a.shape[0]):
                for i in range(len(pts)):
                    w = a[b, h, prefix + i, prefix:]
                    vals.append(sum(w[j] * math.dist(pts[i], pts[j]) for j in range(len(pts))) / w.sum())
            out[layer, h] = np.mean(vals)
    return out


def test_mean_distance_matches_loop_implementation():
    model = tiny(patch_size=16, img_size=64, embed_dim=48, num_heads=3, depth=2)
    with torch.no_grad():  # sharpen attention so heads differ
        for block in model.blocks:
            block.attn.qkv.weight.mul_(8)
    x = torch.randn(2, 3, 64, 64)
    expected = loop_mean_distance(attention_maps(model, x), (4, 4), (16, 16), 1)
    got = mean_attention_distance(model, x)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert np.ptp(expected) > 0.1  # not a constant: the comparison can tell heads apart


# -- position-embedding similarity ------------------------------------------------------


def test_pos_embed_similarity_known_pattern():
    model = tiny(img_size=(32, 24), embed_dim=32)  # 4 x 3 grid
    gh, gw = 4, 3
    pos = torch.zeros(1, 1 + gh * gw, 32)
    pos[0, 0] = 100.0  # the class token's embedding must not enter
    for r, c in itertools.product(range(gh), range(gw)):
        pos[0, 1 + r * gw + c, r] = 2.0  # same row -> same direction
        pos[0, 1 + r * gw + c, 8 + c] = 1.0 if r % 2 == 0 else -1.0
    model.pos_embed.data.copy_(pos)
    got = pos_embed_similarity(model)
    assert got.shape == (gh, gw, gh, gw)
    for i, j, k, l in itertools.product(range(gh), range(gw), range(gh), range(gw)):
        u = (4.0 * (i == k) + (j == l) * (1.0 if (i % 2) == (k % 2) else -1.0)) / 5.0
        assert abs(got[i, j, k, l].item() - u) < 1e-6, (i, j, k, l)


def test_pos_embed_similarity_matches_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity

    model = tiny(distilled=True)
    patches = model.pos_embed[0, 2:].detach().numpy()
    expected = cosine_similarity(patches).reshape(4, 4, 4, 4)
    np.testing.assert_allclose(pos_embed_similarity(model).numpy(), expected, atol=1e-6)


# -- rollout ---------------------------------------------------------------------------


def test_uniform_attention_rollout_closed_form():
    # M = (J/N + I) / 2 per block; M^L = I / 2^L + (1 - 2^-L) J / N, so each class-to-patch entry is (1 - 2^-L) / N
    model = make_uniform(tiny(depth=3))
    got = attention_rollout(model, torch.randn(2, 3, 32, 32))
    assert got.shape == (2, 4, 4)
    torch.testing.assert_close(got, torch.full((2, 4, 4), (1 - 2.0**-3) / 17), atol=1e-7, rtol=1e-6)


def loop_rollout(maps, prefix):
    """numpy: R = I; for each block R = norm(mean_h(A) + I) @ R; class row over patches."""
    out = []
    for b in range(maps[0].shape[0]):
        r = np.eye(maps[0].shape[-1])
        for m in maps:
            a = m[b].double().numpy().mean(axis=0) + np.eye(m.shape[-1])
            a = a / a.sum(axis=1, keepdims=True)
            r = a @ r
        out.append(r[0, prefix:])
    return np.stack(out)


def test_rollout_matches_loop_implementation():
    model = tiny(depth=4)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(6)
    x = torch.randn(2, 3, 32, 32)
    expected = loop_rollout(attention_maps(model, x), 1).reshape(2, 4, 4)
    got = attention_rollout(model, x)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-8)
    assert np.ptp(expected) > 1e-4


def test_rollout_without_class_token_uses_patch_rows():
    model = make_uniform(tiny(class_token=False, global_pool="avg", depth=2))
    got = attention_rollout(model, torch.randn(1, 3, 32, 32))
    # uniform: M^L row mean over all 16 rows is 1/16 per column
    torch.testing.assert_close(got, torch.full((1, 4, 4), 1 / 16), atol=1e-7, rtol=1e-6)


# -- patch-embedding filter components ---------------------------------------------------


def test_patch_components_match_sklearn_pca():
    from sklearn.decomposition import PCA

    model = tiny(embed_dim=64)
    w = model.patch_embed.proj.weight.detach().reshape(64, -1).double().numpy()
    pca = PCA(n_components=10).fit(w)
    comps, ratio = patch_embed_components(model, 10)
    assert comps.shape == (10, 3, 8, 8)
    np.testing.assert_allclose(ratio.numpy(), pca.explained_variance_ratio_, rtol=1e-4)
    flat = comps.reshape(10, -1).double().numpy()
    np.testing.assert_allclose(np.abs((flat * pca.components_).sum(axis=1)), np.ones(10), atol=1e-4)  # equal up to sign


def test_patch_components_known_rank_two_filters():
    model = tiny(embed_dim=40)
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(3 * 64, 2, generator=g, dtype=torch.float64))[0].T  # 2 orthonormal patterns
    coef = torch.randn(40, 2, generator=g, dtype=torch.float64) * torch.tensor([5.0, 1.0], dtype=torch.float64)
    coef = coef - coef.mean(0)
    with torch.no_grad():
        model.patch_embed.proj.weight.copy_((coef @ basis).reshape(40, 3, 8, 8))
    comps, ratio = patch_embed_components(model, 2)
    assert comps.shape == (2, 3, 8, 8)
    assert ratio.sum().item() == pytest.approx(1.0, abs=1e-5)  # all the variance lies in the two patterns
    assert ratio[0] > ratio[1]
    flat = comps.reshape(comps.shape[0], -1).double()
    proj = flat @ basis.T  # each component lies in the span of the two patterns
    torch.testing.assert_close(proj.norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    for c in flat:  # signed so the largest-magnitude entry is positive
        assert c[c.abs().argmax()] > 0


def test_patch_components_bad_args():
    model = tiny()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_components"):
            patch_embed_components(model, bad)
