"""The latent cache on disk: its manifest, shards and stored REPA features, read by ``data=latents``.

A part (layer 1): it knows the file layout only. The run that writes a cache, ``ditlab-extract``,
lives above it in :mod:`ditlab.cache.extract` (layer 3), since it builds the data, encoder and
auxiliary loss.
"""
