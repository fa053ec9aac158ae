"""data=imagefolder: ImageNet layout, ADM crop (DiT train.py's center_crop_arr), RGB conversion, corrupt images."""

import numpy as np
import pytest
import torch
from latent_artifacts import CLASSES, make_image_folder
from PIL import Image

from ditlab.data.imagefolder import ImageFolderDataModule
from ditlab.data.transforms import adm_center_crop
from ditlab.errors import DitlabError
from ditlab.training.train import train

# 16 px images through the identity encoder: the DiT sees 3x16x16 pixels.
IMAGE_RUN = ["data=imagefolder", "data.resolution=16", "data.num_workers=0", "model.patch_size=8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder") / "train"
    return root, make_image_folder(root, per_class=4)


def textured(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "size, steps, offset",
    [  # Produced by the official center_crop_arr, cropping to 256: input, resampling steps, crop offset
        ((500, 375), [("bicubic", (341, 256))], (42, 0)),
        ((1200, 900), [("box", (600, 450)), ("bicubic", (341, 256))], (42, 0)),
        ((640, 480), [("bicubic", (341, 256))], (42, 0)),
        ((256, 300), [], (0, 22)),
        ((2000, 513), [("box", (1000, 256))], (372, 0)),
    ],
)
def test_adm_center_crop_matches_the_reference_table(size, steps, offset):
    image = textured(*size)
    expected = image
    for kind, target in steps:
        expected = expected.resize(target, resample=Image.BOX if kind == "box" else Image.BICUBIC)
    x, y = offset
    expected = expected.crop((x, y, x + 256, y + 256))
    out = adm_center_crop(image, 256)
    assert out.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_sorted_folders_give_labels_and_every_mode_becomes_rgb(folder):
    root, special = folder
    dm = ImageFolderDataModule(root=str(root), resolution=16, batch_size=4, num_workers=0, random_flip=False)
    assert dm.classes == list(CLASSES) and dm.num_classes == 3 and dm.channels == 3
    dm.setup()
    paths = [p for p, _ in dm.dataset.samples]
    for kind in ("grayscale", "rgba", "cmyk"):
        i = paths.index(str(special[kind]))
        x, label, index, bad, _ = dm.dataset[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        assert bad == "" and index == i and label == CLASSES.index(special[kind].parent.name)
    gray, *_ = dm.dataset[paths.index(str(special["grayscale"]))]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L -> RGB repeats the channel
    # Pixel values: ToTensor + Normalize(0.5, 0.5) of the ADM crop.
    i = paths.index(str(root / "cat" / "img00.png"))
    crop = np.array(adm_center_crop(Image.open(paths[i]).convert("RGB"), 16))
    torch.testing.assert_close(dm.dataset[i][0], torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1)


def test_random_flip_is_the_only_augmentation(folder):
    root, _ = folder
    dm = ImageFolderDataModule(root=str(root), resolution=16, batch_size=4, num_workers=0, random_flip=True)
    dm.setup()
    plain = ImageFolderDataModule(root=str(root), resolution=16, batch_size=4, num_workers=0, random_flip=False)
    plain.setup()
    x0 = plain.dataset[0][0]
    torch.manual_seed(0)
    draws = [dm.dataset[0][0] for _ in range(40)]
    flipped = sum(torch.equal(d, x0.flip(-1)) for d in draws)
    assert all(torch.equal(d, x0) or torch.equal(d, x0.flip(-1)) for d in draws)
    assert 8 <= flipped <= 32


def test_num_classes_null_zero_or_the_data_s_count(folder):
    root, _ = folder
    assert ImageFolderDataModule(root=str(root), num_classes=0).num_classes == 0
    with pytest.raises(DitlabError, match="data.num_classes=5 but data.root=.* has 3 classes"):
        ImageFolderDataModule(root=str(root), num_classes=5)
    with pytest.raises(DitlabError, match="data.root=.* is not a directory"):
        ImageFolderDataModule(root=str(root / "missing"))
    with pytest.raises(DitlabError, match="data.root is not set"):
        ImageFolderDataModule(root="???")  # what the YAML's mandatory value resolves to


def test_a_corrupt_image_stops_the_run_naming_its_path(folder, train_cfg):
    root, special = folder
    # One global batch holds all 16 images, so the first step meets the corrupt one.
    cfg = train_cfg(*IMAGE_RUN, f"data.root={root}", "data.batch_size=16")
    with pytest.raises(DitlabError, match=f"cannot read image {special['corrupt']} .*data.skip_corrupt=true"):
        train(cfg)


def test_skip_corrupt_trains_unconditionally_and_counts_it_in_the_summary(folder, train_cfg):
    root, _ = folder
    cfg = train_cfg(
        *IMAGE_RUN,
        f"data.root={root}",
        "data.batch_size=16",
        "data.skip_corrupt=true",
        "data.num_classes=0",
        "guidance.scale=1",
        "data.num_workers=1",
    )
    summary = train(cfg)
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    assert summary["data"]["skipped_corrupt"] == 1 and summary["data"]["num_images"] == 16
    assert summary["data"]["num_classes"] == 0 and summary["params"] > 0
