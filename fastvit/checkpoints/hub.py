"""Reading timm-format models from the Hugging Face Hub and from folders, as timm does.

A timm-format repo or folder holds ``config.json`` (``architecture``, ``num_classes``,
``pretrained_cfg``, ``model_args``) and the weights (``model.safetensors`` or
``pytorch_model.bin``; open_clip file names for some CLIP tags). Files on the Hub are fetched
with ``huggingface_hub.hf_hub_download`` (imported only here, when needed), which honours
``HF_HUB_OFFLINE``, ``HF_HOME`` / ``HF_HUB_CACHE``, tokens and shows its own progress bar.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import read_checkpoint

SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"
OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
OPEN_CLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"
# a folder's weights, in timm's order of preference; then the first file per extension
FOLDER_FILES = (SAFE_WEIGHTS, TORCH_WEIGHTS, "pytorch_model.pth", "model.pth", OPEN_CLIP_SAFE_WEIGHTS,
                "open_clip_pytorch_model.safetensors", OPEN_CLIP_WEIGHTS, "open_clip_pytorch_model.pth")
FOLDER_EXTENSIONS = (".safetensors", ".pth", ".pth.tar", ".bin")
SOURCES = ("hf-hub", "local-dir")


class HubError(OSError):
    """A Hub file that cannot be had (offline and not cached, no such repo or file)."""


def parse_source(name: str) -> tuple[str | None, str]:
    """``"hf-hub:org/repo"`` -> ``("hf-hub", "org/repo")``; ``"local-dir:path"`` likewise; else ``(None, name)``."""
    for source in SOURCES:
        if name.startswith(source + ":"):
            rest = name[len(source) + 1:]
            if not rest:
                raise ValueError(f"{name!r}: nothing after {source + ':'!r}; expected {source}:<"
                                 f"{'org/repo' if source == 'hf-hub' else 'folder'}>")
            return source, rest
    return None, name


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError as e:
        raise ImportError("loading from the Hugging Face Hub needs huggingface_hub: pip install huggingface_hub") from e
    return huggingface_hub


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("fastvit")
    except metadata.PackageNotFoundError:
        return None


def _offline(hub) -> bool:
    check = getattr(hub.constants, "is_offline_mode", None)
    return bool(check() if callable(check) else hub.constants.HF_HUB_OFFLINE)


def split_revision(repo: str) -> tuple[str, str | None]:
    """``"org/repo@rev"`` -> ``("org/repo", "rev")`` (timm's ``hf_split``)."""
    repo_id, *rev = repo.split("@")
    if len(rev) > 1 or not repo_id:
        raise ValueError(f"{repo!r}: expected org/repo or org/repo@revision (one '@')")
    return repo_id, (rev[0] if rev else None)


def hub_file(repo: str, filename: str, cache_dir=None, missing_ok: bool = False) -> str | None:
    """Path of ``filename`` of Hub repo ``repo`` in the local cache, downloaded if needed.
    ``missing_ok``: None when the repo does not have the file (timm's probe for a safetensors twin)."""
    hub = _huggingface_hub()
    from huggingface_hub import errors

    repo_id, revision = split_revision(repo)
    try:
        return hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                   library_name="fastvit", library_version=_version())
    except errors.EntryNotFoundError as e:
        if missing_ok:
            return None
        cache = cache_dir or hub.constants.HF_HUB_CACHE
        if _offline(hub):
            raise HubError(f"{repo_id}: {filename} is not in the local Hugging Face cache ({cache}) and the Hub is "
                           "offline (HF_HUB_OFFLINE is set), so it cannot be downloaded; run once online or "
                           "copy the files into the cache") from e
        if isinstance(e, errors.LocalEntryNotFoundError):
            raise HubError(f"{repo_id}: {filename} is not in the local Hugging Face cache ({cache}) and the Hub "
                           f"could not be reached: {e}") from e
        raise HubError(f"{repo_id}: the repo has no file {filename}") from e
    except errors.RepositoryNotFoundError as e:
        raise HubError(f"{repo_id}: no such Hugging Face Hub repo (or it is private / gated: log in with "
                       f"`hf auth login` or set HF_TOKEN)") from e
    except errors.RevisionNotFoundError as e:
        raise HubError(f"{repo_id}: no revision {revision!r}") from e


def read_json(path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON config ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_model_config(cfg: dict, extra: dict, source: str) -> tuple[dict, str, dict]:
    """timm's reading of a config.json: ``(pretrained_cfg, architecture, model_args)``.

    A legacy single-dict config is its own pretrained_cfg; top-level ``num_classes``,
    ``label_names`` and ``label_descriptions`` override the pretrained_cfg's; ``extra``
    (where the weights are) is added."""
    cfg = json.loads(json.dumps(cfg))  # a deep copy
    if "pretrained_cfg" not in cfg:
        pretrained_cfg = cfg
        if "architecture" not in pretrained_cfg:
            raise ValueError(f"{source}: config.json names no 'architecture' (not a timm-format model)")
        cfg = {"architecture": pretrained_cfg.pop("architecture"), "pretrained_cfg": pretrained_cfg}
        pretrained_cfg.pop("num_features", None)
        if "labels" in pretrained_cfg:
            pretrained_cfg["label_names"] = pretrained_cfg.pop("labels")
    pretrained_cfg = cfg["pretrained_cfg"]
    if not isinstance(pretrained_cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise ValueError(f"{source}: config.json needs a string 'architecture' and a 'pretrained_cfg' object")
    pretrained_cfg.update(extra)
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in cfg:
            pretrained_cfg[key] = cfg[key]
    model_args = cfg.get("model_args") or {}
    own = cfg.get("fastvit_args") or {}  # fields timm has no keyword for (fastvit.save_pretrained)
    if not isinstance(model_args, dict) or not isinstance(own, dict):
        raise ValueError(f"{source}: config.json's model_args / fastvit_args must be objects")
    model_args = {**model_args, **own}
    return pretrained_cfg, cfg["architecture"], model_args


def hub_model_config(repo: str, cache_dir=None) -> tuple[dict, str, dict]:
    """The config.json of a timm-format Hub repo (``hf-hub:``), as :func:`parse_model_config`."""
    path = hub_file(repo, "config.json", cache_dir)
    return parse_model_config(read_json(path), {"hf_hub_id": repo, "source": "hf-hub"}, f"hf-hub:{repo}")


def folder_model_config(folder) -> tuple[dict, str, dict]:
    """The config.json of a timm-format folder (``local-dir:``), as :func:`parse_model_config`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a timm-format folder has config.json and the weights)")
    return parse_model_config(read_json(folder / "config.json"), {"file": str(folder), "source": "local-dir"},
                              f"local-dir:{folder}")


def is_timm_folder(path) -> bool:
    """A folder whose config.json is timm's (it names an ``architecture``), such as
    :func:`fastvit.save_pretrained` and timm's ``save_for_hf`` write."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    try:
        return "architecture" in read_json(path / "config.json")
    except ValueError:
        return False


def _safe_twins(filename: str):
    if filename == TORCH_WEIGHTS:
        yield SAFE_WEIGHTS
    elif filename == OPEN_CLIP_WEIGHTS:
        yield OPEN_CLIP_SAFE_WEIGHTS
    elif filename.endswith(".bin"):
        yield filename[:-4] + ".safetensors"


def hub_weights_file(repo: str, filename: str | None = None, cache_dir=None) -> str:
    """The weights timm loads for Hub repo ``repo``: ``filename`` (default pytorch_model.bin),
    its safetensors twin first when the repo has one (model.safetensors before pytorch_model.bin)."""
    filename = filename or TORCH_WEIGHTS
    if not filename.endswith(".safetensors"):
        for twin in _safe_twins(filename):
            found = hub_file(repo, twin, cache_dir, missing_ok=True)
            if found is not None:
                return found
    return hub_file(repo, filename, cache_dir)


def folder_weights_file(folder) -> Path:
    """The weights file timm reads from a folder: the first of its preferred names, else the
    first file by extension (.safetensors, .pth, .pth.tar, .bin)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    for name in FOLDER_FILES:
        if (folder / name).exists():
            return folder / name
    for ext in FOLDER_EXTENSIONS:
        found = sorted(folder.glob(f"*{ext}"))
        if found:
            return found[0]
    raise FileNotFoundError(f"{folder}: no weights file ({', '.join(FOLDER_FILES[:2])} or any "
                            f"{', '.join(FOLDER_EXTENSIONS)} file)")


def pretrained_weights(pretrained_cfg: dict, cache_dir=None) -> tuple[dict, str]:
    """The state dict a ``pretrained_cfg`` points at, where timm looks for it: a local folder
    (source local-dir), a file, the Hub (hf_hub_id, hf_hub_filename). Returns ``(state_dict, source)``."""
    source = pretrained_cfg.get("source") or ""
    if source not in ("hf-hub", "local-dir") and isinstance(pretrained_cfg.get("state_dict"), dict):
        return pretrained_cfg["state_dict"], "pretrained_cfg['state_dict']"
    name = f"{pretrained_cfg.get('architecture')}" + (f".{pretrained_cfg['tag']}" if pretrained_cfg.get("tag") else "")
    hub_id, file = pretrained_cfg.get("hf_hub_id"), pretrained_cfg.get("file")
    if source == "hf-hub" or (source != "local-dir" and not file and hub_id):
        if not hub_id:
            raise ValueError(f"{name}: pretrained_cfg has source 'hf-hub' but no hf_hub_id")
        path = hub_weights_file(hub_id, pretrained_cfg.get("hf_hub_filename"), cache_dir)
        return read_checkpoint(path), f"hf-hub:{hub_id} ({os.path.basename(path)})"
    if source == "local-dir":
        path = folder_weights_file(file)
        return read_checkpoint(path), str(path)
    if file:
        return read_checkpoint(file), str(file)
    if pretrained_cfg.get("url"):
        raise ValueError(f"{name}: timm downloads these weights from {pretrained_cfg['url']}, not from the Hugging "
                         "Face Hub; download the file and pass it: create_model(..., pretrained=<path>)")
    raise ValueError(f"no pretrained weights exist for {name}; use pretrained=False for a random init "
                     "(fastvit.list_pretrained() lists the tags with weights)")
