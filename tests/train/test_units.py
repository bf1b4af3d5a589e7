"""The train package's parts: sampler, data folders, MPP corruption and targets, lr schedule, layer ids."""

import math

import pytest
import torch

from fastvit.train import data as tdata
from fastvit.train.objectives import MaskedPatchPrediction, corrupt_patches, mean_colour_targets
from fastvit.train.optim import layer_id, lr_factor, param_groups


@pytest.mark.parametrize("n, batch, world", [(103, 12, 1), (103, 12, 2), (103, 12, 4), (50, 50, 5)])
def test_sampler_epoch_covers_each_sample_once_and_shards_the_global_batch(n, batch, world):
    samplers = [tdata.ShardedSampler(n, batch, seed=3, rank=r, world_size=world) for r in range(world)]
    single = tdata.ShardedSampler(n, batch, seed=3)
    assert single.steps_per_epoch == n // batch
    for epoch in (0, 1):
        seen = []
        for step in range(single.steps_per_epoch):
            parts = [s.indices(epoch, step) for s in samplers]
            assert all(len(p) == batch // world for p in parts)
            assert torch.equal(torch.cat(parts), single.global_indices(epoch, step))
            seen += torch.cat(parts).tolist()
        assert len(seen) == len(set(seen)) == single.steps_per_epoch * batch  # nothing repeats in an epoch
    # epochs differ, and a fresh sampler (a resumed run) reproduces them
    assert not torch.equal(single.permutation(0), single.permutation(1))
    last = single.steps_per_epoch - 1
    assert torch.equal(tdata.ShardedSampler(n, batch, seed=3).global_indices(1, last), single.global_indices(1, last))


def test_sampler_rejects_batches_it_cannot_split():
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        tdata.ShardedSampler(100, 10, seed=0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="larger than the training set"):
        tdata.ShardedSampler(10, 16, seed=0)


def test_digits_split_is_fixed_and_stratified():
    d = tdata.load_digits_data((16, 16))
    assert len(d.train) == 1437 and len(d.test) == 360
    assert d.train.images.shape == (1437, 3, 16, 16)
    assert d.train.images.min() >= -1 and d.train.images.max() <= 1
    counts = d.test.labels.bincount()
    assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of each class
    assert set(d.train.labels.tolist()) == set(range(10))
    again = tdata.load_digits_data((16, 16))
    assert torch.equal(again.test.labels, d.test.labels) and torch.equal(again.test.images, d.test.images)


def _png(path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 7), colour).save(path)


def test_folder_data_reads_classes_and_holds_out_a_fixed_fraction(tmp_path):
    for i in range(5):
        _png(tmp_path / "cat" / f"{i}.png", (255, 0, 0))
        _png(tmp_path / "dog" / f"{i}.png", (0, 0, 255))
    d = tdata.load_folder_data(tmp_path, (8, 8), test_fraction=0.2)
    assert d.classes == ["cat", "dog"] and len(d.train) == 8 and len(d.test) == 2
    images, labels = d.train.batch(torch.arange(len(d.train)))
    assert images.shape == (8, 3, 8, 8)
    red = images[labels == 0]
    assert torch.allclose(red[:, 0], torch.ones(1)) and torch.allclose(red[:, 2], -torch.ones(1))
    assert {p.name for p in d.test.files} == {p.name for p in tdata.load_folder_data(tmp_path, (8, 8)).test.files}


def test_folder_data_with_train_and_val_subfolders(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", (10, 20, 30))
    d = tdata.load_folder_data(tmp_path, (4, 4))
    assert len(d.train) == 6 and len(d.test) == 4 and d.classes == ["a", "b"]


def test_folder_data_errors(tmp_path):
    with pytest.raises(tdata.DataError, match="does not exist"):
        tdata.load_folder_data(tmp_path / "nope", (8, 8))
    with pytest.raises(tdata.DataError, match="is empty"):
        tdata.load_folder_data(tmp_path, (8, 8))
    _png(tmp_path / "a" / "0.png", (0, 0, 0))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(tdata.DataError, match=r"class folder .*b has no images"):
        tdata.load_folder_data(tmp_path, (8, 8))


def test_mean_colour_targets_quantize_each_channel_to_3_bits():
    img = torch.zeros(1, 3, 4, 8)
    img[0, :, :, :4] = torch.tensor([1.0, 0.5, 0.0])[:, None, None]  # patch 0: r=7, g=4, b=0
    img[0, :, :, 4:] = torch.tensor([0.2, 0.9, 0.13])[:, None, None]  # patch 1: r=1, g=7, b=1
    t = mean_colour_targets((img - 0.5) / 0.5, patch_size=4)
    assert t.tolist() == [[7 * 64 + 4 * 8 + 0, 1 * 64 + 7 * 8 + 1]]
    assert t.max() < 512


def test_corruption_proportions():
    g = torch.Generator().manual_seed(0)
    b, n, dim = 64, 100, 8
    tokens = torch.randn(b, n, dim)
    mask = torch.full((1, 1, dim), 7.0)
    out, chosen = corrupt_patches(tokens, mask, generator=g)
    assert (chosen.sum(1) == n // 2).all()  # exactly half of every image's patches
    assert torch.equal(out[~chosen], tokens[~chosen])  # the others are untouched
    sel_out, sel_in = out[chosen], tokens[chosen]
    masked = (sel_out == 7.0).all(-1)
    unchanged = (sel_out == sel_in).all(-1)
    replaced = ~masked & ~unchanged
    total = chosen.sum().item()  # 3200 corrupted patches: binomial sd of a 10% share ~ 0.5%
    assert abs(masked.sum().item() / total - 0.8) < 0.03
    assert abs(replaced.sum().item() / total - 0.1) < 0.025
    assert abs(unchanged.sum().item() / total - 0.1) < 0.025
    # replacements are real patch embeddings taken from the batch
    pool = tokens.reshape(-1, dim)
    for row in sel_out[replaced][:20]:
        assert (pool == row).all(-1).any()


def test_mpp_loss_only_counts_corrupted_patches():
    import fastvit

    model = fastvit.create_model("vit_tiny_patch16_224", img_size=8, patch_size=2, embed_dim=32, depth=1,
                                 num_heads=2, num_classes=0)
    mpp = MaskedPatchPrediction(model)
    stats = mpp(torch.rand(3, 3, 8, 8) * 2 - 1)
    assert stats.shape == (3, 3)
    assert torch.equal(stats[:, 2], torch.full((3,), 8.0))  # 16 patches, 8 corrupted each
    assert mpp.mpp_head.out_features == 512


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(30, 0, 60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_layer_ids_and_param_groups():
    import fastvit
    from fastvit.train.objectives import Supervised

    assert layer_id("model.patch_embed.proj.weight", 4) == 0
    assert layer_id("module.model.pos_embed", 4) == 0
    assert layer_id("mask_token", 4) == 0
    assert layer_id("model.blocks.0.attn.qkv.weight", 4) == 1
    assert layer_id("module.model.blocks.3.mlp.fc2.bias", 4) == 4
    assert layer_id("model.head.weight", 4) == 5 and layer_id("mpp_head.weight", 4) == 5
    model = fastvit.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, embed_dim=16, depth=2,
                                 num_heads=2, num_classes=3)
    groups = param_groups(Supervised(model), weight_decay=0.1, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert len(by_name) == len(list(model.parameters()))
    for name in ("model.pos_embed", "model.cls_token", "model.blocks.0.norm1.weight", "model.head.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["model.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.1
    assert by_name["model.head.weight"]["lr_scale"] == 1.0
    assert by_name["model.blocks.1.mlp.fc1.weight"]["lr_scale"] == 0.5
    assert by_name["model.patch_embed.proj.weight"]["lr_scale"] == 0.5**3
