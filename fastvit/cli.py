"""Command line: ``fastvit info | bench | compare | gpu-check | analyze | train`` (also ``python -m fastvit ...``)."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys


def _version(package: str) -> str:
    if importlib.util.find_spec(package) is None:
        return "not installed"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "installed"


def info(args: argparse.Namespace) -> int:
    """Print the environment, the attention backends available here and what ``auto`` picks."""
    import torch

    import fastvit
    from fastvit.layers import auto_choice, backend_status
    from fastvit.kernels.tuning import current_arch, interpreting

    print(f"fastvit {fastvit.__version__}  python {platform.python_version()}  torch {torch.__version__}")
    for package in ("triton", "flash_attn", "xformers", "timm", "transformers"):
        print(f"  {package:<13}{_version(package)}")
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        device = "cuda"
        print(f"device: {torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]}, CUDA {torch.version.cuda}); kernel tables: {current_arch()}")
    else:
        device = "cpu"
        print("device: cpu (no CUDA GPU)" + ("; TRITON_INTERPRET=1: Triton kernels run on the CPU" if interpreting() else ""))
    print("attention backends (attn_impl):")
    for name, reason in backend_status().items():
        print(f"  {name:<11}{'available' if reason is None else 'unavailable: ' + reason}")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for head_dim in (64, 80):
        choice, why = auto_choice(device, dtype, head_dim)
        print(f"auto on {device}, {str(dtype).replace('torch.', '')}, head_dim {head_dim}: {choice} ({why})")
    from fastvit.kernels import registry

    print("fused ops (fastvit.kernels contracts):", *(f"  {line}" for line in registry.describe()), sep="\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastvit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="environment, available attention backends, what attn_impl='auto' picks").set_defaults(func=info)
    for name, module in (("bench", "fastvit.bench"), ("compare", "fastvit.compare"), ("gpu-check", "fastvit.gpucheck"),
                         ("analyze", "fastvit.analysis.command"), ("train", "fastvit.train")):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
