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


def describe_model(model_cfg: Any, block_cfg: Any, model: DiT | None = None, measure: bool = True) -> dict[str, Any]:
    """The run description every record of a run shares (``summary.json``, a failed sweep job's
    record, the report's row for an unfinished run, ``ditlab-flops``): model tag, block and patch
    from the config; with a built ``model`` also tokens, parameters and forward Gflops. ``measure=False``
    takes the closed form where the blocks declare one (equal to the measured count: tests/test_flops.py
    checks every shipped design) and measures only where they do not: ``ditlab-flops`` counts 12 models
    in a blink instead of running 12 counted forward passes."""
    out: dict[str, Any] = {
        "model": model_tag(model_cfg.name, model_cfg.patch_size),
        "block": str(block_cfg.name),
        "patch_size": int(model_cfg.patch_size),
    }
    if model is None:
        return out
    closed = closed_form_gflops(model)
    counted = closed if closed is not None and not measure else measured_gflops(model)
    out.update(tokens=model.num_tokens, **count_params(model), gflops=round(counted, 6))
    if closed is None:
        out["gflops_note"] = (
            f"block '{out['block']}' ({type(model.blocks[0]).__qualname__}) declares no closed-form count "
            "(DiTBlock.macs); gflops is the measured count only"
        )
    else:
        out["gflops_closed_form"] = round(closed, 6)
    return out


# The DiT paper's forward Gflops per image (Table 4; the Fig. 5 designs at XL/2 from §3.2), as printed
# (2 decimals), keyed by (model tag, block, latent side). The paper's models have 4 latent channels in and
# 8 out (learned Σ); block options beyond the paper's (block.mlp=swiglu, ...) have no paper number.
PAPER_GFLOPS: dict[tuple[str, str, int], float] = {
    **{
        (model_tag(size, patch), "adaln_zero", 32): gflops
        for (size, patch), gflops in {
            ("S", 8): 0.36,
            ("S", 4): 1.41,
            ("S", 2): 6.06,
            ("B", 8): 1.42,
            ("B", 4): 5.56,
            ("B", 2): 23.01,
            ("L", 8): 5.01,
            ("L", 4): 19.70,
            ("L", 2): 80.71,
            ("XL", 8): 7.39,
            ("XL", 4): 29.05,
            ("XL", 2): 118.64,
        }.items()
    },
    ("DiT-XL/2", "adaln", 32): 118.56,
    ("DiT-XL/2", "cross_attn", 32): 137.62,
    ("DiT-XL/2", "in_context", 32): 119.37,
    ("DiT-XL/2", "adaln_zero", 64): 524.60,  # 512x512
}
# Block options at these values are the paper's block; any other value is named in the block's label.
PAPER_BLOCK_OPTIONS = {"norm": "layernorm", "mlp": "gelu", "qk_norm": False, "position": "sincos"}


def block_label(block_cfg: Any) -> str:
    """The block's name with every option that differs from the paper's block, e.g. ``adaln_zero+swiglu``
    (``block.mlp=swiglu``), ``adaln+rmsnorm+qk_norm``; a user block's own options as ``key=value``."""
    options = {k: v for k, v in dict(block_cfg).items() if k not in ("name", "module")}
    parts = [str(block_cfg["name"])]
    for key, value in options.items():
        if PAPER_BLOCK_OPTIONS.get(key, object()) == value:
            continue
        if key in PAPER_BLOCK_OPTIONS:
            parts.append(key if value is True else str(value))
        else:
            parts.append(f"{key}={value}")
    return "+".join(parts)


def paper_gflops(
    model: str, block: str, input_size: int, in_channels: int = 4, learn_sigma: bool = True
) -> float | None:
    """The paper's printed Gflops for this composition (``block`` as :func:`block_label` names it), or
    ``None`` where the paper has no such model."""
    if in_channels != 4 or not learn_sigma:
        return None
    return PAPER_GFLOPS.get((model, block, int(input_size)))
