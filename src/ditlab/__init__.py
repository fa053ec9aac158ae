"""ditlab: config-driven experiments with Diffusion Transformers (Peebles & Xie, arXiv 2212.09748)."""

__version__ = "0.1.0"
