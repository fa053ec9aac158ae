"""ditlab's Hydra launcher plugin: every multirun job as its own torchrun DDP group (``hydra/launcher=torchrun``)."""
