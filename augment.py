"""Augmentation pipelines (albumentations), resizing for the model, and test-time augmentation views.

    none   resize only
    flips  resize + horizontal and vertical flips, nothing else: the task's simple baseline, which
           shows how much the shift, zoom and colour of light and heavy add over mirror images
    light  resize + a small random shift and zoom (up to 10% of the side) + horizontal flip: the
           classic regulariser of a CNN trained from scratch, which otherwise memorises a small
           training set (training accuracy 1.0 by mid-schedule on vehicles6 and utilityvehicles10)
    heavy  random resized crop (50-100% of the area) + horizontal flip + colour jitter (brightness,
           contrast, saturation, hue) + a small rotation: strong enough to regularise a short
           fine-tune, not so strong that the model is still fitting the augmentation when it ends

Vertical flips in light and heavy only with --vflip (aerial or microscope images; a car or a digit
upside down is another picture); flips always has them, as the task's baseline asks. Test-time
views follow training: flipped views only where training flipped.

Images are resized to the model's input size with --upscale (small images are upscaled for
pretrained backbones). Pipelines end in uint8 tensors: the loader hands bytes over (a quarter of
float32's), and model_input() turns each batch into the model's input on the device, with the
backbone's own mean/std.

Usage:
    python augment.py --data ../shared/data/vehicles6 --aug heavy      # reports/augment_heavy.png
    python augment.py --aug none flips light heavy                     # a row per pipeline
    python augment.py --aug light --img-size 128 --upscale nearest
"""
import argparse
import functools
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # an offline machine must not wait on a version check
import albumentations as A  # noqa: E402
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2

from choices import AUGMENTATIONS, UPSCALE
from utils import UserError, pyplot, run_cli, save_photo_figure

INTERPOLATION = dict(zip(UPSCALE, (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4,
                                   cv2.INTER_AREA)))


def input_size(short_side, pretrained):
    """The default input size for images whose median short side is `short_side` px: from scratch, that
    side rounded to 32 px within 32-64 px; pretrained, 160 px whatever the images (the backbones learned
    objects at ImageNet scale, so small images are upscaled to it; at 160 px they tie the plain script's
    accuracy in under half its time on the shared sets, where photos at 192 px, 1.44x the cost of an
    epoch, took 0.6-1.0 of it: reports/vs_plain.md). Pass --img-size for more."""
    if pretrained:
        return 160
    return int(min(64, max(32, 32 * round(short_side / 32))))


def test_size(img_size, aug):
    """The input size to predict at after training at img_size with `aug`: 10% larger (to 8 px) after
    heavy, whose random crops of half to all of the image show objects about 1.15x larger than the whole
    image resized does, so a model trained on them meets objects at the size it learned only in a
    larger test image (the train-test resolution discrepancy: Touvron et al., "Fixing the train-test
    resolution discrepancy", 2019); the training size after the others, which resize the whole image."""
    return int(8 * round(1.1 * img_size / 8)) if aug == "heavy" else img_size


def augmentations(aug, size, upscale="bicubic", vflip=False):
    """The list of albumentations ops for one pipeline, ending at size x size, not normalised."""
    if aug not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {aug!r}: choose from {', '.join(AUGMENTATIONS)}")
    interpolation = INTERPOLATION[upscale]
    if aug != "heavy":
        ops = [resize(size, upscale)]
    else:
        # the crop does the resize, so the image is interpolated once
        ops = [A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), ratio=(0.75, 4 / 3),
                                   interpolation=interpolation, area_for_downscale="image"),
               A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
               A.Affine(rotate=(-10, 10), interpolation=interpolation, border_mode=cv2.BORDER_REFLECT_101,
                        p=0.3)]
    if aug == "light":
        ops.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.1, 0.1), interpolation=interpolation,
                            border_mode=cv2.BORDER_REFLECT_101, p=1.0))
    if aug in ("flips", "light", "heavy"):
        ops.append(A.HorizontalFlip(p=0.5))
        if vflip or aug == "flips":
            ops.append(A.VerticalFlip(p=0.5))
    return ops


def resize(size, upscale="bicubic"):
    """The resize to size x size that every pipeline but heavy starts with. --upscale applies when
    enlarging; shrinking always averages pixels (INTER_AREA), since other kernels alias and the model
    then learns the aliasing."""
    return A.Resize(size, size, interpolation=INTERPOLATION[upscale], area_for_downscale="image")


def cache_form(augs, size, upscale="bicubic"):
    """What ImageDataset.fill_cache keeps of each decoded image for pipelines `augs`: the image already
    resized to the input size when none of them crops (their first op, the same resize, then has
    nothing to do each epoch), else the image shrunk to a short side of twice the input size, so
    that a random crop of half the area still has every pixel it needs."""
    if "heavy" not in augs:
        fixed = resize(size, upscale)
        return lambda image: fixed(image=image)["image"]

    def shrink(image):
        scale = 2 * size / min(image.shape[:2])
        if scale >= 1:
            return image
        return cv2.resize(image, (max(1, round(image.shape[1] * scale)),
                                  max(1, round(image.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return shrink


def build_transform(aug, size, upscale="bicubic", vflip=False):
    """Image array -> CHW uint8 tensor of size x size (model_input() makes it the model's input)."""
    return A.Compose(augmentations(aug, size, upscale, vflip) + [ToTensorV2()])


def model_input(images, device, mean, std):
    """A batch of uint8 images from the loader, (..., C, H, W) -> the model's input on `device`:
    float32 (pixel / 255 - mean) / std per channel, channels_last for 4-d batches. Normalised once per
    batch on the device instead of once per image in a loader worker, whose CPU time goes to
    augmenting (bench/ceiling.py)."""
    images = images.to(device, non_blocking=True)
    if images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    pixel_mean, pixel_std = pixel_statistics(tuple(mean), tuple(std), images.device)
    return (images.float() - pixel_mean) / pixel_std


def resize_batch(images, size):
    """A model-input batch shrunk to size x size on the device (train.py --progressive): antialiased, so
    that it looks like the image resized once, not like a subsampled one."""
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.contiguous(memory_format=torch.channels_last)


@functools.lru_cache
def pixel_statistics(mean, std, device):
    """mean and std in pixel units as (C, 1, 1) tensors on the device, made once rather than every batch
    (on a GPU each new tensor is a copy from the host)."""
    return (torch.tensor(mean, device=device).view(-1, 1, 1) * 255,
            torch.tensor(std, device=device).view(-1, 1, 1) * 255)


# ---------------------------------------------------------------- test-time augmentation

def _crop(frac, top, left):
    """A view that keeps a frac-sized window at (top, left) fractions of the image."""
    def view(image):
        h, w = image.shape[:2]
        ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
        y0, x0 = round(top * (h - ch)), round(left * (w - cw))
        return image[y0:y0 + ch, x0:x0 + cw]
    return view


def tta_views(aug, vflip=False):
    """Every candidate test-time view of an image, as (name, function on HWC arrays), applied before
    the resize as training's augmentation is. Only views training showed the model: the plain image,
    flips where training flipped, and a zoom and shifts of a 90% window where training cropped
    (--aug heavy). predict.py keeps those that help on validation images (choose_views)."""
    hflip, vflip_fn = np.fliplr, np.flipud
    views = [("plain", lambda im: im)]
    if aug in ("flips", "light", "heavy"):
        views.append(("hflip", hflip))
        if vflip or aug == "flips":
            views += [("vflip", vflip_fn), ("hvflip", lambda im: vflip_fn(hflip(im)))]
    if aug == "heavy":
        zoom = _crop(0.9, 0.5, 0.5)
        corners = {"top-left": (0, 0), "bottom-right": (1, 1), "top-right": (0, 1), "bottom-left": (1, 0)}
        views += [("zoom", zoom), ("hflip-zoom", lambda im: hflip(zoom(im)))]
        views += [(f"shift-{name}", _crop(0.9, top, left)) for name, (top, left) in corners.items()]
    return views


def named_views(names):
    """The test-time views of these names (a checkpoint's tta_views), as tta_views gives them."""
    every_view = dict(tta_views("heavy", vflip=True))
    return [(name, every_view[name]) for name in names]


@torch.no_grad()
def view_probs(model, views, mean, std, logit_shift=None):
    """Softmax of every view of a uint8 batch: (batch, views, C, H, W) in, normalised with mean and std,
    (views, batch, classes) out,
    plus the plain view's pooled features (batch, D) for error analysis. All views go through the
    model in one call; index 0 is the plain prediction, the mean over axis 0 the TTA one.
    logit_shift (classes,) is subtracted from the logits first (post-hoc logit adjustment)."""
    batch, n_views = views.shape[:2]
    features = model.embed(model_input(views.flatten(0, 1), views.device, mean, std))
    logits = model.head(features).float()
    if logit_shift is not None:
        logits = logits - logit_shift.to(logits.device)
    probs = logits.softmax(1).view(batch, n_views, -1).transpose(0, 1)
    return probs, features.float().view(batch, n_views, -1)[:, 0]


# ---------------------------------------------------------------- preview

def save_preview(image, augs, size, upscale, out_path, vflip=False, draws=7, credit=""):
    """One image under random draws of each pipeline in augs, a row each, beside the original; credit
    (the image's source and licence) is written under the figure."""
    plt = pyplot()
    fig, axes = plt.subplots(len(augs), draws + 1, figsize=(1.6 * (draws + 1), 1.75 * len(augs) + 0.3),
                             squeeze=False)
    for row, aug in zip(axes, augs):
        pipeline = A.Compose(augmentations(aug, size, upscale, vflip))
        row[0].imshow(image)
        row[0].set_title("original", fontsize=8)
        for ax in row[1:]:
            ax.imshow(pipeline(image=image)["image"])
        row[1].set_title(f"--aug {aug}", fontsize=8, loc="left")
        for ax in row:
            ax.axis("off")
    fig.suptitle(f"{size} px, --upscale {upscale}", fontsize=9)
    if credit:
        fig.text(0.5, 0.005, credit, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if credit else 0, 1, 1))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    save_photo_figure(fig, out_path)


def main():
    from data import load_rgb, read_dataset, resolve_data_dir
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    parser.add_argument("--aug", nargs="+", default=["heavy"], choices=AUGMENTATIONS,
                        help="pipelines, a row each")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--vflip", action="store_true", help="vertical flips too")
    parser.add_argument("--upscale", default="bicubic", choices=UPSCALE)
    parser.add_argument("--index", type=int, default=0, help="which training image to show")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="PNG path (default: reports/augment_AUG.png)")
    parser.add_argument("--credit", default="",
                        help="a line under the figure: the image's source and licence")
    args = parser.parse_args()
    train = read_dataset(resolve_data_dir(args.data))["train"]
    np.random.seed(args.seed)
    out = args.out or f"reports/augment_{'-'.join(args.aug)}.png"
    image = load_rgb(train.paths[args.index % len(train.paths)])
    save_preview(image, args.aug, args.img_size, args.upscale, out, args.vflip, credit=args.credit)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
