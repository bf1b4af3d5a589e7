"""Training data: scikit-learn's digits, image folders, and the deterministic sharded sampler.

Both datasets hand out ``(image, label)`` with images as float tensors
(3, H, W) at the model's size, scaled to [-1, 1] (mean 0.5, std 0.5 per
channel, as the Google ViT checkpoints expect).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# The digits split, fixed so every run and every reader sees the same test set:
# sklearn.model_selection.train_test_split(test_size=360, stratify=labels, random_state=0)
# -> 1,437 training and 360 test images (35 to 37 per class: 20% of each).
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


class DataError(ValueError):
    """Unusable training data (missing folder, no images, an empty class)."""


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


class TensorDataset:
    """Images already in memory: (N, 3, H, W) float in [-1, 1] and (N,) int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.labels[indices]


class FolderDataset:
    """Image files read on demand with PIL, resized to ``size`` (h, w), RGB."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], size: tuple[int, int]):
        self.files, self.labels, self.classes, self.size = files, torch.tensor(labels, dtype=torch.long), classes, size

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
        from PIL import Image

        size = size or self.size
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
                data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return _normalize(data.view(size[0], size[1], 3).permute(2, 0, 1).float() / 255.0)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([self._load(self.files[i]) for i in indices.tolist()])
        return images, self.labels[indices]


class NativeFolderDataset(FolderDataset):
    """Image files at their own size and aspect ratio (``--naflex``): each resized only to whole
    patches, or down to ``max_patches`` patches (:func:`fastvit.train.naflex.native_grid`);
    ``batch`` gives a list of (3, h, w) images."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], patch_size: int, max_patches: int):
        super().__init__(files, labels, classes, None)
        self.patch_size, self.max_patches = patch_size, max_patches
        self._grids: list[tuple[int, int]] | None = None

    def grids(self) -> list[tuple[int, int]]:
        """Each image's (rows, columns) of patches, from the file headers (nothing decoded)."""
        if self._grids is None:
            from PIL import Image

            from .naflex import native_grid

            grids = []
            for path in self.files:
                try:
                    with Image.open(path) as im:
                        w, h = im.size
                except OSError as e:
                    raise DataError(f"cannot read image {path}: {e}") from None
                grids.append(native_grid(h, w, self.patch_size, self.max_patches))
            self._grids = grids
        return self._grids

    def batch(self, indices: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        grids, p = self.grids(), self.patch_size
        images = [self._load(self.files[i], (grids[i][0] * p, grids[i][1] * p)) for i in indices.tolist()]
        return images, self.labels[indices]


@dataclass
class Data:
    train: TensorDataset | FolderDataset
    test: TensorDataset | FolderDataset | None
    classes: list[str]
    description: str


def resize_gray(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) grayscale in [0, 1] -> (N, 3, H, W) in [-1, 1], bilinear (no antialias: digits only grow)."""
    x = F.interpolate(images[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return _normalize(x.clamp(0, 1)).expand(-1, 3, -1, -1).contiguous()


def load_digits_data(size: tuple[int, int]) -> Data:
    """scikit-learn's 1,797 handwritten 8x8 digits (shipped in its wheel), split as documented above."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("--data digits needs scikit-learn: pip install 'fastvit[train]' (or scikit-learn)") from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        list(range(len(labels))), test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    x = resize_gray(images, size)
    classes = [str(i) for i in range(10)]
    return Data(
        TensorDataset(x[train_idx], labels[train_idx], classes),
        TensorDataset(x[test_idx], labels[test_idx], classes),
        classes,
        f"digits: {len(train_idx)} train / {len(test_idx)} test images, 10 classes, resized 8x8 -> {size[0]}x{size[1]}",
    )


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder (expected one subfolder of images per class, or 'digits')")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if loose:
            raise DataError(f"data folder {root} holds {len(loose)} image(s) but no class subfolders: put each "
                            f"class's images in a subfolder named after it ({root}/cats/*.jpg, {root}/dogs/*.jpg, ...)")
        raise DataError(f"data folder {root} is empty: expected one subfolder of images per class")
    found = {}
    for name in classes:
        files = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        found[name] = files
    return found


def load_folder_data(root: str | os.PathLike, size: tuple[int, int], test_fraction: float = 0.2,
                     native: tuple[int, int] | None = None) -> Data:
    """A folder with one subfolder per class. If it has ``train/`` and ``val/`` (or ``test/``)
    subfolders that are themselves class folders, those are the split; otherwise a fixed
    ``test_fraction`` of each class (files sorted, shuffled with seed 0) is held out.
    ``native``: (patch size, max patches) -- images keep their own size (:class:`NativeFolderDataset`)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("--data PATH needs Pillow to read images: pip install pillow") from None
    root = Path(root)
    held = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and held is not None:
        train_files, test_files = _class_files(root / "train"), _class_files(held)
        if sorted(train_files) != sorted(test_files):
            raise DataError(f"{root / 'train'} and {held} must hold the same class folders, "
                            f"got {sorted(train_files)} and {sorted(test_files)}")
    else:
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        train_files, test_files = {}, {}
        for name, files in _class_files(root).items():
            files = list(files)
            random.Random(0).shuffle(files)
            n_test = int(round(test_fraction * len(files))) if len(files) > 1 else 0
            test_files[name], train_files[name] = files[:n_test], files[n_test:]
    classes = sorted(train_files)

    def build(per_class):
        files, labels = [], []
        for label, name in enumerate(classes):
            files += per_class.get(name, [])
            labels += [label] * len(per_class.get(name, []))
        if native is not None:
            return NativeFolderDataset(files, labels, classes, *native)
        return FolderDataset(files, labels, classes, size)

    train, test = build(train_files), build(test_files)
    test = test if len(test) else None
    n_test = len(test) if test is not None else 0
    return Data(train, test, classes, f"{root}: {len(train)} train / {n_test} test images, {len(classes)} classes")


def load_data(spec: str, size: tuple[int, int] | None, test_fraction: float = 0.2,
              native: tuple[int, int] | None = None) -> Data:
    if spec == "digits":
        return load_digits_data(size)
    return load_folder_data(spec, size, test_fraction, native)


class ShardedSampler:
    """Which samples each step sees, as a pure function of (seed, epoch, step).

    Each epoch is one permutation of the training set drawn from a generator
    seeded with ``seed + epoch``; step ``s`` takes global batch
    ``perm[s*B:(s+1)*B]`` and rank ``r`` of ``W`` takes its ``r``-th contiguous
    ``B/W`` slice. The last incomplete batch is dropped, so every step has the
    same global batch whatever the number of processes, and a run resumed at
    (epoch, step) sees exactly the batches the uninterrupted run would have.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"--batch-size {global_batch} is not divisible by the number of processes ({world_size})")
        if global_batch > num_samples:
            raise ValueError(f"--batch-size {global_batch} is larger than the training set ({num_samples} images)")
        self.num_samples, self.global_batch, self.seed = num_samples, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = num_samples // global_batch
        self._epoch, self._perm = None, None

    def steps_in(self, epoch: int) -> int:
        """Steps of epoch ``epoch``: the same for every epoch here (:class:`~fastvit.train.naflex.TokenBudgetSampler`'s vary)."""
        return self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_samples, generator=g)
        return self._perm

    def global_indices(self, epoch: int, step: int) -> torch.Tensor:
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside the epoch's {self.steps_per_epoch} steps")
        return self.permutation(epoch)[step * self.global_batch : (step + 1) * self.global_batch]

    def indices(self, epoch: int, step: int) -> torch.Tensor:
        local = self.global_batch // self.world_size
        return self.global_indices(epoch, step)[self.rank * local : (self.rank + 1) * local]
