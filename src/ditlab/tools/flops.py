"""Forward Gflops per image, counted the way the DiT paper counts them.

Convention (paper Table 4; DiT issues #14/#67): one forward pass of one image, a multiply-add
counts once (GMACs), attention matmuls included, label lookup/norms/activations free, CFG not
doubled, VAE excluded.

Two independent counts:

* :func:`measured_gflops` runs the model once under ``torch.utils.flop_counter.FlopCounterMode``
  with the MATH attention kernel (CPU's fused SDPA kernel is not in the flop registry and would
  count 0) and halves the FLOPs to get MACs.
* :func:`closed_form_gflops` is the analytic sum of the same terms (per block: QKV/projection/MLP matmuls, QKᵀ and AV,
  conditioning Linears; plus patch embedding, timestep MLP and final layer), used to
  cross-check the measurement in tests.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ditlab.models.dit import DiT


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


def closed_form_gflops(model: DiT) -> float:
    """Analytic GMACs: patch conv + t-MLP + blocks (matmuls and attention) + final linear."""
    blk = model.blocks[0]
    D = model.pos_embed.shape[-1]
    T = model.num_tokens
    C, p, C_out = model.in_channels, model.patch_size, model.out_channels
    F = model.t_embedder.frequency_embedding_size
    hidden = blk.mlp.fc1.out_features
    S = T + model.context_tokens  # sequence length inside the blocks
    per_block = 4 * S * D * D + 2 * S * hidden * D + 2 * S * S * D  # qkv + proj, MLP, QKᵀ + AV
    modulation = getattr(blk, "adaLN_modulation", None)
    if modulation is not None:
        per_block += modulation[-1].out_features * D
    if hasattr(blk, "cross_attn"):
        K = 2  # [t, y] context tokens
        per_block += 2 * T * D * D + 2 * K * D * D + 2 * T * K * D  # q + out proj, k/v proj, QKᵀ + AV
    macs = T * C * p * p * D + F * D + D * D + len(model.blocks) * per_block + T * D * p * p * C_out
    if model.final_layer.modulated:
        macs += 2 * D * D
    return macs / 1e9
