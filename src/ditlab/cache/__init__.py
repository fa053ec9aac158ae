"""Latent caches: ``ditlab-extract`` writes them (:mod:`ditlab.cache.extract`), ``data=latents`` reads them."""
