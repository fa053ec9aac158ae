"""``ditlab-extract``: the run that writes a latent cache (:mod:`ditlab.cache.extract`); the cache's
file layout, which ``data=latents`` reads, is :mod:`ditlab.latent_cache`."""
