"""Precision/Recall (Kynkäänniemi et al., 2019) and the Inception Score, as the ADM evaluator
(guided-diffusion ``evaluations/evaluator.py``) computes them.

Precision/Recall: each set spans a manifold, the union of balls around its points whose radius is
the distance to the k-th nearest other point of the same set (k = 3). Precision is the fraction of
generated points inside the reference manifold, recall the fraction of reference points inside the
generated one. Distances are squared Euclidean (compared with squared radii, ``<=``), evaluated in
blocks so 50K × 10K never sits in memory at once.

Inception Score: ``exp(mean KL(p(y|x) || p(y)))`` over consecutive splits of ``split_size`` samples
in sample order (the last split may be shorter), averaged; ADM uses 5,000 (ten splits of 50K).
"""

from __future__ import annotations

import torch

BLOCK = 1024  # rows per distance block (1024 x 50K float64 = 400 MB)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)[None]
    return d.clamp_(min=0)


def manifold_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour in the same set (self excluded)."""
    f = features.double()
    if len(f) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} points per set, got {len(f)}")
    out = torch.empty(len(f), dtype=torch.float64, device=f.device)
    for i in range(0, len(f), BLOCK):
        d = _sq_dists(f[i : i + BLOCK], f)
        # The k+1 smallest include the point itself (distance 0): the k-th neighbour is the last.
        out[i : i + BLOCK] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point: does it lie within the radius of at least one centre?"""
    p, c = points.double(), centres.double()
    inside = torch.zeros(len(p), dtype=torch.bool, device=p.device)
    for i in range(0, len(p), BLOCK):
        inside[i : i + BLOCK] = (_sq_dists(p[i : i + BLOCK], c) <= radii[None]).any(1)
    return inside


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` feature sets (N, d)."""
    real_radii, fake_radii = manifold_radii(real, k), manifold_radii(fake, k)
    precision = _inside(fake, real, real_radii).double().mean()
    recall = _inside(real, fake, fake_radii).double().mean()
    return float(precision), float(recall)


def inception_score(logits: torch.Tensor, split_size: int = 5000) -> tuple[float, float]:
    """(mean, std) of the Inception Score over consecutive splits of ``split_size`` samples."""
    logp = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for i in range(0, len(logp), split_size):
        part = logp[i : i + split_size]
        marginal = torch.logsumexp(part, 0) - torch.log(torch.tensor(float(len(part)), dtype=torch.float64))
        kl = (part.exp() * (part - marginal)).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False)) if len(s) > 1 else 0.0
