"""Augmentation pipelines (albumentations), resizing for the model, and test-time augmentation views.

    none   resize only
    light  resize + horizontal and vertical flips (the baseline)
    heavy  light + random resized crop, affine shift/scale/rotate, brightness/contrast,
           hue/saturation, blur or noise, coarse dropout

Images are resized to the model's input size with --upscale (small images are upscaled for
pretrained backbones) and normalised with the backbone's own mean/std.

Usage:
    python augment.py --data ../shared/data/vehicles6 --aug heavy      # reports/augment_heavy.png
    python augment.py --aug light --img-size 128 --upscale nearest
"""
import argparse
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from utils import UserError, run_cli

AUGMENTATIONS = ("none", "light", "heavy")
UPSCALE = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
           "lanczos": cv2.INTER_LANCZOS4, "area": cv2.INTER_AREA}


def augmentations(aug, size, upscale="bicubic"):
    """The list of albumentations ops for one pipeline, ending at size x size, not normalised."""
    if aug not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {aug!r}: choose from {', '.join(AUGMENTATIONS)}")
    interpolation = UPSCALE[upscale]
    # --upscale applies when enlarging; shrinking always averages pixels (INTER_AREA), since other
    # kernels alias and the model then learns the aliasing
    if aug != "heavy":
        ops = [A.Resize(size, size, interpolation=interpolation, area_for_downscale="image")]
    else:
        # the crop does the resize, so the image is interpolated once
        ops = [A.RandomResizedCrop(size=(size, size), scale=(0.6, 1.0), ratio=(0.8, 1.25), interpolation=interpolation,
                                   area_for_downscale="image"),
               A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-15, 15), interpolation=interpolation,
                        border_mode=cv2.BORDER_REFLECT_101, p=0.5),
               A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.5),
               A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=15, p=0.5),
               A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
               A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25),
                               fill=0, p=0.5)]
    if aug in ("light", "heavy"):
        ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return ops


def build_transform(aug, size, mean, std, upscale="bicubic"):
    """Image array -> normalised CHW float tensor."""
    return A.Compose(augmentations(aug, size, upscale) + [A.Normalize(mean=mean, std=std), ToTensorV2()])


# ---------------------------------------------------------------- test-time augmentation

def _crop(frac, top, left):
    """A view that keeps a frac-sized window at (top, left) fractions of the image."""
    def view(image):
        h, w = image.shape[:2]
        ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
        y0, x0 = round(top * (h - ch)), round(left * (w - cw))
        return image[y0:y0 + ch, x0:x0 + cw]
    return view


def tta_views(n, aug):
    """n deterministic views of an image (functions on HWC arrays, applied before the resize, as
    training's augmentation is), ordered by how close they stay to what training showed: flips
    only where the model was trained with flips, then a zoom and shifts of a 90% window."""
    hflip, vflip = np.fliplr, np.flipud
    flips = [hflip, vflip, lambda im: vflip(hflip(im))] if aug in ("light", "heavy") else []
    zoom = _crop(0.9, 0.5, 0.5)
    shifts = [_crop(0.9, top, left) for top, left in ((0, 0), (1, 1), (0, 1), (1, 0))]
    views = [lambda im: im] + flips + [zoom] + ([lambda im: hflip(zoom(im))] if flips else []) + shifts
    if n > len(views):
        raise UserError(f"--tta {n}: at most {len(views)} views for a model trained with --aug {aug}")
    return views[:max(n, 1)]


@torch.no_grad()
def view_probs(model, views, logit_shift=None):
    """Softmax of every view of a batch: (batch, views, C, H, W) in, (views, batch, classes) out,
    plus the plain view's pooled features (batch, D) for error analysis. All views go through the
    model in one call; index 0 is the plain prediction, the mean over axis 0 the TTA one.
    logit_shift (classes,) is subtracted from the logits first (post-hoc logit adjustment)."""
    batch, n_views = views.shape[:2]
    features = model.embed(views.flatten(0, 1).contiguous(memory_format=torch.channels_last))
    logits = model.head(features).float()
    if logit_shift is not None:
        logits = logits - logit_shift.to(logits.device)
    probs = logits.softmax(1).view(batch, n_views, -1).transpose(0, 1)
    return probs, features.float().view(batch, n_views, -1)[:, 0]


# ---------------------------------------------------------------- preview

def save_preview(image, aug, size, upscale, out_path, draws=15):
    """One image under many random draws of a pipeline, beside the original."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pipeline = A.Compose(augmentations(aug, size, upscale))
    fig, axes = plt.subplots(2, (draws + 1) // 2, figsize=(2 * ((draws + 1) // 2), 4.2))
    axes = axes.flatten()
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=8)
    for ax in axes[1:]:
        ax.imshow(pipeline(image=image)["image"])
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"--aug {aug}, {size} px, --upscale {upscale}")
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def main():
    from data import load_rgb, read_dataset, resolve_data_dir
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    parser.add_argument("--aug", default="heavy", choices=AUGMENTATIONS)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--upscale", default="bicubic", choices=UPSCALE)
    parser.add_argument("--index", type=int, default=0, help="which training image to show")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="PNG path (default: reports/augment_AUG.png)")
    args = parser.parse_args()
    train = read_dataset(resolve_data_dir(args.data))["train"]
    np.random.seed(args.seed)
    out = args.out or f"reports/augment_{args.aug}.png"
    save_preview(load_rgb(train.paths[args.index % len(train.paths)]), args.aug, args.img_size, args.upscale, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
