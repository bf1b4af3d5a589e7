"""Command line: fastvit info | models | bench | compare | gpu-check | analyze | train (also python -m fastvit ...)."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import platform
import re
import sys
import textwrap

# -- the parser: plain help text, suggestions for typos ---------------------------------------------


def plain(text: str) -> str:
    """Help text without reStructuredText markup: ``code``, `code` and :role:`target` become their text."""
    text = re.sub(r":[a-z]+:`~?\.?([^`]*)`", r"\1", text)
    return re.sub(r"``?([^`]+)``?", r"\1", text)


class _Formatter(argparse.HelpFormatter):
    """Wraps at spaces only (a long name or a hyphenated word is never split) and drops markup."""

    def _split_lines(self, text, width):
        return textwrap.wrap(plain(" ".join(text.split())), width, break_long_words=False, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        paragraphs = [" ".join(p.split()) for p in plain(text).split("\n\n")]
        return "\n\n".join(
            textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False)
            for p in paragraphs if p
        )  # fmt: skip


class _RawFormatter(argparse.RawDescriptionHelpFormatter):
    """A description kept as written (but without markup); options wrapped as :class:`_Formatter` does."""

    _split_lines = _Formatter._split_lines

    def _fill_text(self, text, width, indent):
        return super()._fill_text(plain(text), width, indent)


def suggest(word: str, choices, n: int = 1) -> list[str]:
    """The closest of ``choices`` to a mistyped ``word``, best first; [] when none is close.

    Two swapped letters (``--modle``) point at the choice with the same letters (``--model``) first;
    otherwise difflib's similarity ranks them."""
    choices = list(dict.fromkeys(str(c) for c in choices))
    same_letters = [c for c in choices if sorted(c) == sorted(word) and c != word]
    close = difflib.get_close_matches(word, choices, n=n + len(same_letters), cutoff=0.6)
    return list(dict.fromkeys(same_letters + close))[:n]


class Parser(argparse.ArgumentParser):
    """argparse with plain help (:class:`_Formatter`) and a "did you mean ...?" for a mistyped
    subcommand, choice, flag or ``--set`` key (Python 3.14's suggest_on_error, for every Python).
    Subcommand parsers are made of the same class."""

    def __init__(self, *args, **kwargs):
        formatter = kwargs.get("formatter_class", argparse.HelpFormatter)
        kwargs["formatter_class"] = {argparse.HelpFormatter: _Formatter, argparse.RawDescriptionHelpFormatter: _RawFormatter}.get(
            formatter, formatter)  # fmt: skip
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        bad = re.search(r"invalid choice: '([^']*)'", message)
        if bad:
            choices = [c for a in self._actions if a.choices for c in a.choices]
            close = suggest(bad.group(1), choices)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            target = self._subcommand_parser(namespace)
            hints = []
            options = [o for a in target._actions for o in a.option_strings]
            for token in extras:
                if token.startswith("-"):
                    close = suggest(token.split("=", 1)[0], options)
                    if close:
                        hints.append(f"{token.split('=', 1)[0]} -> {close[0]}")
            hint = f" (did you mean: {', '.join(hints)}?)" if hints else ""
            target.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return namespace

    def _subcommand_parser(self, namespace) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None) or "")
                if chosen is not None:
                    return chosen._subcommand_parser(namespace) if isinstance(chosen, Parser) else chosen
        return self


def set_key_problem(namespace) -> str | None:
    """``--set KEY=VALUE`` takes a ViTConfig field: for a mistyped key, the error naming the closest fields."""
    sets = getattr(namespace, "sets", None)
    if not sets:
        return None
    import dataclasses

    from .config import ViTConfig

    config_cls, what = ViTConfig, "ViTConfig field"
    if (getattr(namespace, "model", None) or "").startswith("naflexvit_"):  # a NaFlexVit takes its own options
        from .naflex.config import NaFlexConfig

        config_cls, what = NaFlexConfig, "NaFlexVit option"
    valid = [f.name for f in dataclasses.fields(config_cls)]
    for key, _ in sets:
        if key not in valid:
            close = suggest(key, valid, n=2)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"valid: {', '.join(sorted(valid))}"
            return f"--set {key}=...: unknown {what} {key!r}; {hint}"
    return None


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
    from fastvit.kernels import ops
    from fastvit.kernels.tuning import current_arch, interpreting
    from fastvit.factory import get_config
    from fastvit.layers import backend_status

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
    print("fused ops (fastvit.kernels.ops):", *(f"  {line}" for line in ops.describe()), sep="\n")
    return 0


def models(args: argparse.Namespace) -> int:
    """``fastvit models [PATTERN]``: the presets (a shell wildcard, or a part of the name), their sizes and
    timm's default pretrained tag (fastvit never downloads: the tag says which timm weights the preset matches)."""
    from .factory import get_config, list_models

    pattern = args.pattern or "*"
    names = list_models(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")
    if not names:
        close = suggest(pattern, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        apple = " (timm's fastvit_* models are Apple's FastViT, a different architecture that fastvit does not build)" \
            if pattern.startswith("fastvit") else ""  # fmt: skip
        print(f"fastvit models: no preset matches {pattern!r}{hint}{apple}; `fastvit models` lists all {len(list_models())}",
              file=sys.stderr)
        return 1
    rows = [("name", "img", "patch", "dim", "depth", "heads", "params", "timm tag")]
    for name in names:
        cfg = get_config(name)
        tag = default_tag(name, cfg) or "-"
        rows.append((name, "x".join(map(str, cfg.img_size)), str(cfg.patch_size), str(cfg.embed_dim), str(cfg.depth),
                     str(cfg.num_heads), f"{num_params(cfg) / 1e6:.1f}M", tag))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return 0


def default_tag(name: str, cfg) -> str | None:
    """timm's default pretrained tag of a model name (either family)."""
    from .naflex.config import NAFLEX_PRESETS
    from .presets import PRESETS, pretrained_cfg_for
    from .presets_eva import eva_pretrained_cfg

    if name in NAFLEX_PRESETS:  # timm's tags straight from the table
        from .checkpoints.pretrained_cfgs import default_tag as table_tag

        return table_tag(name)
    return (pretrained_cfg_for(name, cfg) if name in PRESETS else eva_pretrained_cfg(name, cfg)).get("tag")


def num_params(cfg) -> int:
    """A config's parameter count: the closed form where the config has one, else counted on the meta device."""
    if hasattr(cfg, "num_params"):
        return cfg.num_params()
    import torch

    from .eva import Eva
    from .naflex import NaFlexConfig, NaFlexVit

    with torch.device("meta"):
        model = NaFlexVit(cfg) if isinstance(cfg, NaFlexConfig) else Eva(cfg)
        return sum(p.numel() for p in model.parameters())


def _package_version() -> str:
    import fastvit

    return fastvit.__version__


def build_parser() -> Parser:
    """The ``fastvit`` parser with every subcommand whose module is importable."""
    parser = Parser(prog="fastvit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastvit {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="environment, available attention backends, each op's candidates and what 'auto' picks")
    p.add_argument("--model", default="vit_base_patch16_224", help="preset whose shapes 'auto' is shown for")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per batch (default 8)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on the CPU")
    p.set_defaults(func=info)
    p = sub.add_parser("models", help="list the model presets (with their sizes and timm's pretrained tag)",
                       description=models.__doc__)  # fmt: skip
    p.add_argument("pattern", nargs="?", help="shell wildcard (vit_base*) or part of a name (patch14)")
    p.set_defaults(func=models)
    for name, module in (("bench", "fastvit.bench"), ("compare", "fastvit.compare"), ("gpu-check", "fastvit.gpucheck"),
                         ("analyze", "fastvit.analysis.command"), ("train", "fastvit.train")):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = set_key_problem(args)
    if problem:  # before the command starts (as the commands report their own bad input: exit status 2)
        print(f"fastvit {args.command}: error: {problem}", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
