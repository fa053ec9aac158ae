"""Small artifacts the data/encoder tests build themselves: a tiny diffusers VAE saved with
``save_pretrained`` and an ImageNet-layout folder of generated images (with the awkward cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ant", "bee", "cat")  # sorted: label ids 0, 1, 2


def tiny_vae(sample_size: int = 32):
    """A 0.66M-parameter AutoencoderKL (downsample 2, 4 latent channels), weights from the global RNG."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
    )


def make_tiny_vae(directory: Path, seed: int = 0) -> Path:
    """:func:`tiny_vae` seeded with ``seed``, written with save_pretrained."""
    import torch

    torch.manual_seed(seed)
    tiny_vae().save_pretrained(directory)
    return directory


def make_image_folder(root: Path, per_class: int = 4, corrupt: bool = True, seed: int = 0) -> dict[str, Path]:
    """root/<class>/<i>.png of assorted sizes; one grayscale, one RGBA, one CMYK JPEG and (optionally)
    one corrupt file. Returns the special files by kind."""
    rng = np.random.default_rng(seed)
    special: dict[str, Path] = {}
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(18, 40)), int(rng.integers(18, 40))
            base = np.full((h, w, 3), 60 * c, dtype=np.uint8)
            base[:, : w // 2] += rng.integers(0, 100, size=(h, w // 2, 3), dtype=np.uint8)  # asymmetric: flips differ
            Image.fromarray(base).save(folder / f"img{i:02d}.png")
    gray = Image.fromarray(rng.integers(0, 255, size=(30, 24), dtype=np.uint8), mode="L")
    special["grayscale"] = root / CLASSES[0] / "gray.png"
    gray.save(special["grayscale"])
    rgba = Image.fromarray(rng.integers(0, 255, size=(22, 26, 4), dtype=np.uint8), mode="RGBA")
    special["rgba"] = root / CLASSES[1] / "rgba.png"
    rgba.save(special["rgba"])
    special["cmyk"] = root / CLASSES[2] / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 255, size=(20, 28, 3), dtype=np.uint8)).convert("CMYK").save(special["cmyk"])
    if corrupt:
        special["corrupt"] = root / CLASSES[1] / "broken.png"
        special["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return special


def compose_extract(*overrides: str):
    """The real ``extract`` config (Hydra compose API) with CPU-test defaults in front of ``overrides``."""
    from ditlab.config import compose

    return compose(
        "extract",
        ["data.resolution=16", "data.num_workers=0", "device=cpu", "shard_size=5", "batch_size=4", *overrides],
    )


def extract_cfg(assets: dict, cache_dir: Path, *overrides: str):
    """``compose_extract`` for the test image folder and VAE in ``assets`` (a module fixture's dict)."""
    return compose_extract(
        f"data.root={assets['root']}",
        f"encoder.path={assets['vae']}",
        f"cache_dir={cache_dir}",
        "data.skip_corrupt=true",
        "dtype=float32",
        *overrides,
    )


# A cache-trained run at test size: tiny DiT on 4x8x8 latents (16px images through the tiny VAE).
LATENT_TRAIN = [
    "data=latents",
    "encoder=sd_vae",
    "data.resolution=null",
    "data.batch_size=4",
    "data.num_workers=0",
    "final_samples.num_samples=6",
    "final_samples.batch_size=6",
]
