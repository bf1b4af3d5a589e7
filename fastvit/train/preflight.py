"""Everything a run can know it lacks, checked before its first step (and before its data loads).

A run that would fail after its last step (no safetensors to save the weights) or
halfway (a broken image, no Triton for ``--impl fused``) fails here instead, with
the ``pip install`` or flag that fixes it.
"""

from __future__ import annotations

import importlib
import os

# module -> (pip package, what needs it)
SAVE_DEPS = {"safetensors": ("safetensors", "saving model.safetensors")}
DIGITS_DEPS = {"sklearn": ("scikit-learn", "--data digits")}
FOLDER_DEPS = {"PIL": ("pillow", "reading an image folder")}
PROGRESS_DEPS = {"tqdm": ("tqdm", "the progress bar (or pass --no-progress)")}
OPTIONAL_DEPS = {"matplotlib": ("matplotlib", "drawing curves.png")}

# digits are 8x8: beyond this the model sees mostly interpolation, at a quadratic cost
DIGITS_SENSIBLE_PX = 32


def _missing(deps: dict) -> list[tuple[str, str]]:
    out = []
    for module, (package, why) in deps.items():
        try:
            importlib.import_module(module)
        except ImportError:
            out.append((package, why))
    return out


def check_dependencies(cfg) -> list[str]:
    """``ImportError`` naming every package the run needs and lacks; returns notes for the optional ones."""
    deps = {**SAVE_DEPS, **(DIGITS_DEPS if cfg.data == "digits" else FOLDER_DEPS)}
    if cfg.progress:
        deps.update(PROGRESS_DEPS)
    missing = _missing(deps)
    if missing:
        packages = " ".join(sorted({p for p, _ in missing}))
        needs = "; ".join(f"{p} for {why}" for p, why in missing)
        raise ImportError(f"this run needs {needs}: pip install {packages} (nothing was trained)")
    return [f"no {p} installed: {why} is skipped (pip install {p})" for p, why in _missing(OPTIONAL_DEPS)]


def check_impl(impl: str, device) -> None:
    """``--impl fused`` runs Triton kernels: a CUDA GPU (or TRITON_INTERPRET=1 for a slow CPU check)."""
    if impl != "fused" or device.type == "cuda":
        return
    from ..kernels.tuning import interpreting

    if not interpreting():
        raise ValueError(f"--impl fused runs Triton kernels, which need a CUDA GPU (this run is on {device.type}); "
                         f"use --impl auto or --impl torch")


def cpu_threads(ncpu: int, load: float | None) -> int:
    """Torch threads for a CPU run: the cores other processes leave idle (at least 1).

    torch starts one OpenMP thread per core; on a shared, loaded machine those threads
    wait for each other at every op and a run gets many times slower."""
    if load is None:
        return ncpu
    return max(1, min(ncpu, ncpu - int(round(load))))


def set_cpu_threads(log) -> None:
    """On a CPU run without OMP_NUM_THREADS, size torch's thread pool to the idle cores and say so."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    n = cpu_threads(ncpu, load)
    torch.set_num_threads(n)
    log(f"CPU: {n} torch thread(s) for {ncpu} core(s)" + (f" at load {load:.1f}" if load is not None else "")
        + "; set OMP_NUM_THREADS to choose")


def digits_note(img_size) -> str | None:
    if max(img_size) > DIGITS_SENSIBLE_PX:
        return (f"digits are 8x8 images: upsampling them to {img_size[0]}x{img_size[1]} px costs "
                f"{(img_size[0] * img_size[1]) // 64}x the compute of 8 px for no extra detail; "
                f"--img-size 32 --patch-size 4 (or smaller) trains as well, much faster")
    return None


def verify_images(files, limit: int = 5) -> None:
    """Decode every image once; ``ValueError`` listing the unreadable ones (up to ``limit``)."""
    from PIL import Image

    bad = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, SyntaxError, ValueError) as e:  # PIL raises SyntaxError for some corrupt headers
            bad.append(f"{path} ({e})")
    if bad:
        more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
        raise ValueError(f"{len(bad)} unreadable image(s), found before training: {'; '.join(bad[:limit])}{more}; "
                         f"remove or replace them")
