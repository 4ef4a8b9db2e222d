"""The project's own learned upscaler: ESPCN (Shi et al. 2016) trained on the competition's training images.

Usage:
    python superres.py --data ../shared/data/vehicles6 --scale 2 --epochs 6 --name vehicles6-x2 # CPU: minutes
    python superres.py upscale --model runs/sr-vehicles6-x2/espcn.pt --data ../shared/data/vehicles6
    python train.py --data runs/sr-vehicles6-x2/data --pretrained --img-size 200

Training: random crops of the training images are the targets, the same crops shrunk by --scale
with area averaging the inputs. Convolutions at the low resolution make scale² values per pixel that
PixelShuffle rearranges into the larger image: a correction to bicubic that starts at zero, so the
model begins exactly as good as bicubic. A --holdout fraction (whole groups of near-duplicates, as
train.py's split) is never trained on; shrunk and enlarged the same way, its whole images give the
mean PSNR of ESPCN, bicubic and bilinear in runs/sr-NAME/psnr.md and metrics.json, beside espcn.pt.
upscale writes an enlarged copy of a competition folder as PNGs for train.py/predict.py --data.
"""
import argparse
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from choices import NUMBER_BLOCK
from data import holdout_split, load_rgb, read_dataset, resolve_data_dir
from utils import UserError, load_checkpoint, new_run_dir, pick_device, run_cli, seed_everything, write_json


class ESPCN(nn.Module):
    """Low-resolution convolutions, then PixelShuffle: an image scale times larger, added to bicubic."""

    def __init__(self, scale=2, width=64):
        super().__init__()
        self.scale, self.width = scale, width
        self.body = nn.Sequential(nn.Conv2d(3, width, 5, padding=2), nn.Tanh(),
                                  nn.Conv2d(width, width // 2, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(width // 2, 3 * scale ** 2, 3, padding=1), nn.PixelShuffle(scale))
        for param in self.body[4].parameters():  # no correction yet: the output starts as bicubic
            nn.init.zeros_(param)

    def forward(self, x):
        """x: (N, 3, H, W) in [0, 1] -> (N, 3, scale H, scale W)."""
        return enlarge(x, self.scale, "bicubic") + self.body(x - 0.5)


def enlarge(x, scale, mode):
    return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)


def shrink(x, scale):
    return F.avg_pool2d(x, scale)  # area interpolation: for an integer factor, the mean of each block


def load_chw(path):  # (3, H, W) uint8: the whole training set is held in memory, a quarter of it as floats
    return torch.tensor(load_rgb(path)).permute(2, 0, 1)


def as_float(images):  # uint8 -> [0, 1]
    return images.float().div(255)


def psnr(output, target):
    """In dB, on images quantised to 8 bits as they are saved."""
    output = output.clamp(0, 1).mul(255).round().div(255)
    return float(10 * torch.log10(1 / F.mse_loss(output, target).clamp_min(1e-10)))


def random_crops(images, crop, batch, generator):
    """(batch, 3, crop, crop) floats: a random patch of each of batch random images."""
    patches = []
    for i in torch.randint(len(images), (batch,), generator=generator).tolist():
        y, x = (int(torch.randint(n - crop + 1, (1,), generator=generator)) for n in images[i].shape[1:])
        patches.append(images[i][:, y:y + crop, x:x + crop])
    return as_float(torch.stack(patches))


@torch.no_grad()
def mean_psnr(model, images, scale, device):
    """Each upscaler's mean PSNR over whole images (cut to a multiple of scale),
    from the same shrunk input."""
    model.eval()
    scores = {"espcn": [], "bicubic": [], "bilinear": []}
    for image in images:
        h, w = (n - n % scale for n in image.shape[1:])
        target = as_float(image[None, :, :h, :w]).to(device)
        small = shrink(target, scale)
        for name in scores:
            scores[name].append(psnr(model(small) if name == "espcn" else enlarge(small, scale, name),
                                     target))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def train_espcn(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--epochs", type=int, default=20, help="an epoch draws one crop per training image")
    p.add_argument("--crop", type=int, default=48, help="side of the high-resolution training crops")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam, cosine-annealed to zero")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction of training images kept out for PSNR")
    p.add_argument("--block", type=int, default=NUMBER_BLOCK,
                   help="as train.py: numbered files in blocks of N held out together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", help="run folder runs/sr-NAME (default: DATA-xSCALE)")
    args = p.parse_args(argv)
    if args.crop % args.scale or not 0 < args.holdout < 1:
        raise UserError("--crop must be a multiple of --scale, --holdout in (0, 1): "
                        f"got {args.crop}, {args.holdout}")
    seed_everything(args.seed)
    device = pick_device(args.device)
    data_dir = resolve_data_dir(args.data)
    images = read_dataset(data_dir)["train"]
    keep, held, _ = holdout_split(images, args.holdout, args.block, args.seed)
    held = [load_chw(path) for path in held.paths]
    trainable = [image for image in map(load_chw, keep.paths)
                 if min(image.shape[1:]) >= args.crop]  # smaller images have no crop of that size
    if not trainable:
        raise UserError(f"no training image left is at least {args.crop} px on each side: "
                        "use a smaller --crop")
    run_dir = new_run_dir(f"sr-{args.name or f'{data_dir.name}-x{args.scale}'}")
    print(f"{len(trainable)} training images, {len(held)} held out; writing {run_dir}")
    model = ESPCN(args.scale).to(device)
    steps = args.epochs * max(1, len(trainable) // args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(1, steps + 1):
        model.train()
        target = random_crops(trainable, args.crop, args.batch_size, generator).to(device)
        loss = F.mse_loss(model(shrink(target, args.scale)), target)  # MSE: what PSNR measures
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % max(1, steps // 10) == 0:
            scores = mean_psnr(model, held, args.scale, device)
            print(f"step {step}/{steps}: loss {loss.item():.5f}; held-out PSNR "
                  f"ESPCN {scores['espcn']:.2f} dB, bicubic {scores['bicubic']:.2f} dB")

    scores = mean_psnr(model, held, args.scale, device)
    torch.save({"model": model.state_dict(), "scale": args.scale, "width": model.width, "psnr": scores},
               run_dir / "espcn.pt")
    write_json(run_dir / "metrics.json", {"scale": args.scale, "held_out_images": len(held),
                                          "train_images": len(trainable), "psnr_db": scores})
    table = ["| upscaler | PSNR (dB) |", "|---|---|"] + [f"| {name} | {db:.2f} |"
                                                         for name, db in scores.items()]
    (run_dir / "psnr.md").write_text("\n".join(
        [f"# ESPCN x{args.scale} on {data_dir}", "", "```bash", "python superres.py " + shlex.join(argv),
         "```", "", f"Mean PSNR over {len(held)} held-out training images (whole images, area-downscaled "
         f"{args.scale}x, then upscaled back; 8-bit):", ""] + table) + "\n")
    print("\n".join(table) + f"\nwrote {run_dir}/espcn.pt, psnr.md and metrics.json")
    return run_dir


@torch.no_grad()
def upscale_folder(argv):
    p = argparse.ArgumentParser(description="Write an ESPCN-upscaled copy of a competition folder.")
    p.add_argument("--model", required=True, help="espcn.pt written by python superres.py")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a file that holds more than weights")
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--out", help="new folder (default: data/ beside the model, inside runs/)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if not Path(args.model).is_file():
        raise UserError(f"model not found: {args.model} (train one: python superres.py --data DIR)")
    ckpt = load_checkpoint(args.model, ("model", "scale", "width"), "superres.py (an espcn.pt)",
                           trust=args.trust_checkpoint)
    model = ESPCN(ckpt["scale"], ckpt["width"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"{args.model} does not match an ESPCN of its own settings: "
                        f"{str(e).splitlines()[0]}") from None
    data_dir = resolve_data_dir(args.data)
    ds = read_dataset(data_dir)
    out = Path(args.out or Path(args.model).parent / "data")
    if out.exists():
        raise UserError(f"{out} exists: choose a new --out, so an earlier copy is never overwritten")
    device = pick_device(args.device)
    model = model.to(device).eval()
    tmp = out.with_name(out.name + ".tmp")  # renamed when complete: a half-written copy is never used
    shutil.rmtree(tmp, ignore_errors=True)
    for split_name, split in ((name, ds[name]) for name in ("train", "val", "test") if ds[name] is not None):
        # class folders where labeled
        for path, label in zip(split.paths, split.labels or [""] * len(split.paths)):
            folder = tmp / split_name / label
            folder.mkdir(parents=True, exist_ok=True)
            image = model(as_float(load_chw(path))[None].to(device))[0].clamp(0, 1).mul(255).round()
            Image.fromarray(image.byte().permute(1, 2, 0).cpu().numpy()).save(
                folder / f"{Path(path).stem}.png")
        print(f"{split_name}: {len(split.paths)} images")
    for csv_path in filter(None, (ds["sample_submission"], ds["solution"])):
        shutil.copy(csv_path, tmp / csv_path.name)
    tmp.rename(out)
    print(f"wrote {out} ({ckpt['scale']}x); next: python train.py --data {out}")
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return upscale_folder(argv[1:]) if argv[:1] == ["upscale"] else train_espcn(argv)


if __name__ == "__main__":
    run_cli(main)
