"""Reading and checking a checkpoint file, and copying its weights into a model.

Every checkpoint ditlab reads comes through :func:`read_checkpoint`: a ditlab run's own
``checkpoints/*.ckpt`` (resume, ``ditlab-sample``, ``ditlab-eval``), an official DiT file
(``from_official``) and ``init_from=`` (:func:`load_initial_weights`). Files are loaded with
``torch.load(weights_only=True)``; DiT's ``train.py`` pickles its ``argparse.Namespace`` next to the
weights, and that one class (a plain attribute bag) is allowlisted.
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditlab.errors import DitlabError
from ditlab.inputs import LEGACY_TORCH_MAGIC, is_pickle, python_objects, refused_global, refuses_objects

StateDict = Mapping[str, torch.Tensor]


def load_weights(model: nn.Module, state_dict: StateDict, source: str, target: str = "the model") -> None:
    """:func:`check_weights`, then a strict ``load_state_dict`` (a missing ``pos_embed`` keeps the model's)."""
    check_weights(model, state_dict, source, target)
    model.load_state_dict(dict(state_dict), strict="pos_embed" in state_dict)


def check_weights(model: nn.Module, state_dict: StateDict, source: str, target: str = "the model") -> None:
    """Raise DitlabError unless ``state_dict`` has exactly the model's keys and shapes.

    Names the first key (in the model's order) that is missing or has another shape, with both
    shapes, or the first key the model does not have. ``pos_embed`` may be missing: it is the fixed
    sin-cos table, which some converted checkpoints leave out.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            if key == "pos_embed":
                continue
            raise DitlabError(f"{source} does not fit {target}: key '{key}' is missing from it")
        got = tuple(state_dict[key].shape)
        if got != tuple(tensor.shape):
            raise DitlabError(
                f"{source} does not fit {target}: first mismatching key '{key}' has shape {got} in the "
                f"checkpoint but {tuple(tensor.shape)} in the model; use the size, patch, input size and "
                "number of classes the checkpoint was trained with"
            )
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise DitlabError(f"{source} does not fit {target}: it has key '{extra[0]}' that the model lacks")


def read_checkpoint(state_dict_or_path: Any) -> Mapping[str, Any]:
    """A path is loaded with ``weights_only=True`` (``argparse.Namespace`` allowlisted); a dict passes through."""
    if isinstance(state_dict_or_path, Mapping):
        return state_dict_or_path
    path = Path(state_dict_or_path).expanduser()
    if not path.is_file():
        raise DitlabError(f"checkpoint file not found: {path}")
    if is_pickle(path):  # a bare pickle is code to run, not a damaged checkpoint
        raise python_objects(path, " (a bare pickle)", "use a checkpoint saved with torch.save")
    if not _looks_like_torch_file(path):
        raise DitlabError(_unreadable(path, "not a torch.save file"))
    try:
        # DiT's train.py stores its argparse Namespace under "args"; allow exactly that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not refuses_objects(e):  # damaged bytes, not a refused class
            raise DitlabError(_unreadable(path, first[:120])) from None
        raise DitlabError(
            f"{path} holds Python objects ({refused_global(e)}) that weights-only loading will not run; ditlab loads "
            "only tensors (plus the argparse.Namespace that DiT's train.py pickles). If you trust the file, re-save "
            "just the weights: "
            f"torch.save(torch.load('{path}', weights_only=False)['ema'], 'weights.pt')"
        ) from None
    if not isinstance(obj, Mapping):
        raise DitlabError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    return obj


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; files from torch < 1.6 start with a pickled magic number."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_MAGIC))
    return head == LEGACY_TORCH_MAGIC or zipfile.is_zipfile(path)


def _unreadable(path: Path, why: str) -> str:
    return (
        f"{path} is not a readable PyTorch checkpoint ({why}): the file is damaged, truncated or of another "
        "format; use another checkpoint (e.g. an earlier checkpoints/step*.ckpt of the run)"
    )


def is_ditlab_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    return isinstance(ckpt.get("state_dict"), Mapping) and "ditlab" in ckpt


def extract_state_dict(ckpt: Mapping[str, Any], use_ema: bool = True, source: str = "checkpoint") -> dict:
    """The DiT weights of any supported format, official key names (no prefixes)."""
    if isinstance(ckpt.get("state_dict"), Mapping):  # Lightning: "model."/"ema." prefixed module state
        inner = ckpt["state_dict"]
        for prefix in ("ema.", "model.") if use_ema else ("model.",):
            sd = {k[len(prefix) :]: v for k, v in inner.items() if k.startswith(prefix)}
            if sd:
                return sd
        raise DitlabError(f"{source} is a Lightning checkpoint without 'model.'/'ema.' weights")
    for key in ("ema", "model") if use_ema else ("model",):
        if isinstance(ckpt.get(key), Mapping):
            return dict(ckpt[key])
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise DitlabError(
        f"{source} is neither a DiT state dict nor a checkpoint with 'model'/'ema' weights "
        f"(top-level keys: {', '.join(list(map(str, ckpt))[:8])})"
    )


def load_initial_weights(model: nn.Module, path: str | Path, use_ema: bool = True) -> None:
    """Fine-tuning (``init_from=path``): copy an official/training/ditlab checkpoint's weights into ``model``."""
    source = f"init_from={path}"
    if not Path(path).expanduser().is_file():
        raise DitlabError(f"{source}: file not found; set init_from to a DiT state dict or checkpoint file")
    ckpt = read_checkpoint(path)
    load_weights(model, extract_state_dict(ckpt, use_ema=use_ema, source=source), source=source)
