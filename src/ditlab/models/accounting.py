"""What a model costs, and the one description of it that summaries, sweeps and reports share.

Gflops follow the DiT paper's convention (Table 4; DiT issues #14/#67): one forward pass of one
image, a multiply-add counts once (GMACs), attention matmuls included, label lookup, norms and
activations free, classifier-free guidance not doubled, the VAE excluded.

Two independent counts:

* :func:`measured_gflops` runs the model once under ``torch.utils.flop_counter.FlopCounterMode``
  with the MATH attention kernel (CPU's fused SDPA kernel is not in the flop registry and would
  count 0) and halves the FLOPs to get MACs. It works for any block.
* :func:`closed_form_gflops` sums the same terms analytically: the stem and final layer here, each
  block through its :meth:`~ditlab.models.blocks.DiTBlock.macs` hook. A block that does not declare
  the hook (a user's design) has no closed form; its summary says the measured count is the only one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ditlab.models.dit import DiT, model_tag


def count_params(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": total, "trainable_params": trainable}


@torch.no_grad()
def measured_gflops(model: DiT) -> float:
    """GMACs of one forward pass of one image, measured with FlopCounterMode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    x = torch.zeros(1, model.in_channels, model.input_size, model.input_size, device=device, dtype=dtype)
    t = torch.zeros(1, dtype=torch.long, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with sdpa_kernel([SDPBackend.MATH]), counter:
            model(x, t, y)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def closed_form_gflops(model: DiT) -> float | None:
    """Analytic GMACs: patch conv + t-MLP + the blocks' own counts + final layer; ``None`` when a
    block declares no closed-form count (see :func:`block_macs`)."""
    seq_len = model.num_tokens + model.context_tokens  # the sequence inside the blocks
    per_block = [block_macs(block, seq_len) for block in model.blocks]
    if any(m is None for m in per_block):
        return None
    D = model.hidden_size
    T, C, p, C_out = model.num_tokens, model.in_channels, model.patch_size, model.out_channels
    F = model.t_embedder.frequency_embedding_size
    stem = T * C * p * p * D + F * D + D * D  # patch conv, timestep MLP (label lookup is free)
    final = T * D * p * p * C_out + (2 * D * D if model.final_layer.modulated else 0)
    return (stem + sum(per_block) + final) / 1e9


def block_macs(block: torch.nn.Module, seq_len: int) -> int | None:
    """The block's ``macs(seq_len)``, trusted only where the class that defines ``forward`` also
    defines (or inherits below it) ``macs``: a subclass that changes ``forward`` but keeps its
    parent's count would otherwise get the parent's number silently."""
    macs = getattr(block, "macs", None)
    if macs is None or not issubclass(_owner(type(block), "macs"), _owner(type(block), "forward")):
        return None
    return macs(seq_len)


def _owner(cls: type, attr: str) -> type:
    return next(k for k in cls.__mro__ if attr in vars(k))


def describe_model(model_cfg: Any, block_cfg: Any, model: DiT | None = None) -> dict[str, Any]:
    """The run description every record of a run shares (``summary.json``, a failed sweep job's
    record, the report's row for an unfinished run, ``ditlab-flops``): model tag, block and patch
    from the config; with a built ``model`` also tokens, parameters and forward Gflops."""
    out: dict[str, Any] = {
        "model": model_tag(model_cfg.name, model_cfg.patch_size),
        "block": str(block_cfg.name),
        "patch_size": int(model_cfg.patch_size),
    }
    if model is None:
        return out
    out.update(tokens=model.num_tokens, **count_params(model), gflops=round(measured_gflops(model), 6))
    closed = closed_form_gflops(model)
    if closed is None:
        out["gflops_note"] = (
            f"block '{out['block']}' ({type(model.blocks[0]).__qualname__}) declares no closed-form count "
            "(DiTBlock.macs); gflops is the measured count only"
        )
    else:
        out["gflops_closed_form"] = round(closed, 6)
    return out
