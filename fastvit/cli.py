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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def info(args: argparse.Namespace) -> int:
    """Print the environment, the attention backends available here, each op's candidates and what
    ``auto`` picks for ``--model``'s shapes at ``--batch`` and ``--dtype`` (measured times on CUDA)."""
    import torch

    import fastvit
    from fastvit.dispatch import policy
    from fastvit.auto_report import auto_report
    from fastvit.kernels import registry
    from fastvit.kernels.tuning import current_arch, interpreting
    from fastvit.layers import backend_status
    from fastvit.presets import get_config

    try:  # check what can fail before printing anything
        get_config(args.model)
        policy()
    except ValueError as e:  # an unknown model or a bad FASTVIT_DISPATCH
        print(f"fastvit info: error: {e}", file=sys.stderr)
        return 2
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
    print("\n".join(auto_report(args.model, args.batch, args.dtype, device)))
    print("fused ops (fastvit.kernels contracts):", *(f"  {line}" for line in registry.describe()), sep="\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastvit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="environment, available attention backends, each op's candidates and what 'auto' picks")
    p.add_argument("--model", default="vit_base_patch16_224", help="preset whose shapes 'auto' is shown for")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per batch (default 8)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on the CPU")
    p.set_defaults(func=info)
    for name, module in (("bench", "fastvit.bench"), ("compare", "fastvit.compare"), ("gpu-check", "fastvit.gpucheck"),
                         ("analyze", "fastvit.analysis.command"), ("train", "fastvit.train")):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
