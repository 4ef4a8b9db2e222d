"""A class-conditional DCGAN that makes extra training images for the classifier.

Generator: noise through transposed convolutions with class-conditional BatchNorm, tanh.
Discriminator: strided convolutions with spectral norm, conditioned by projection (Miyato & Koyama
2018: the inner product of a class embedding with the pooled features is added to the score).
Hinge loss; Adam with betas (0.0, 0.9) and two time-scale learning rates (G 1e-4, D 4e-4, as SAGAN);
DiffAugment (Zhao et al. 2020: colour, translation, cutout) on real and fake images in both steps;
an EMA copy of the generator, with BatchNorm statistics recomputed for it, makes every sample.

It trains on the training split only, as train.py makes it (val/ when the folder has one, else
train/ less the leak-free validation split), never on val or test images.

Each run folder runs/gan-NAME/ holds config.json, log.csv (per epoch: d_loss, g_loss, seconds, and
Frechet distances when computed), losses.png, samples_epochNNN.png (fixed noise, one row per class)
and last.pt, written every epoch.

The Frechet distance (FD) is measured on features of the ImageNet-pretrained efficientnet_lite0,
not Inception-v3: use it to see one run improve, and do NOT compare it with published FID numbers.

Usage:
    python gan.py --epochs 200                                  # ./data, else the built-in digits
    python gan.py --data ../shared/data/vehicles6 --img-size 32 --epochs 150 --fd-every 25
    python gan.py --data ../shared/data/vehicles6-lt --balance-classes --epochs 400   # long-tailed data
    python gan.py --resume runs/gan-NAME --epochs 300           # continue, optionally for longer
    python gan.py sample --per-class 500 --out gan-extra        # latest runs/gan-*, all classes
    python gan.py sample --run runs/gan-NAME --per-class 50 --out extra --classes bike,car
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim.swa_utils import AveragedModel

from balance import draw_weights
from choices import AMP, NUMBER_BLOCK, VAL_FRACTION
from data import load_rgb, read_dataset, resolve_data_dir, take_fraction, train_val_split
from models import build_model
from utils import (
    UserError,
    amp_dtype,
    append_csv,
    ema_update,
    environment,
    latest_run,
    load_checkpoint,
    new_run_dir,
    pick_device,
    pyplot,
    read_csv,
    run_cli,
    safe_name,
    save_checkpoint,
    save_epoch_figure,
    seed_everything,
    write_json,
)

FD_NOTE = "FD on efficientnet_lite0 features: NOT comparable with Inception-FID numbers"
FD_SIZE = 128  # images are upscaled to this before the feature network, which was trained at 224 px


# ---------------------------------------------------------------- networks

class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (de Vries et al. 2017, as in SNGAN)."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x, labels):
        return self.norm(x) * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class Generator(nn.Module):
    """(noise, class) -> image in [-1, 1]: a 4x4 map doubled in size per stage up to img_size.

    The class enters through conditional BatchNorm, not as an input next to the noise: with the
    class concatenated to the noise, the generator learnt to ignore the noise (one image per class).
    """

    def __init__(self, num_classes, img_size=32, z_dim=128, width=64):
        super().__init__()
        stages = int(math.log2(img_size // 4))
        channels = width * 2 ** (stages - 1)
        self.project = nn.Linear(z_dim, channels * 16)
        self.norms = nn.ModuleList([ConditionalBatchNorm(channels, num_classes)])
        self.ups = nn.ModuleList()
        for _ in range(stages - 1):
            self.ups.append(nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm(channels // 2, num_classes))
            channels //= 2
        self.to_rgb = nn.ConvTranspose2d(channels, 3, 4, 2, 1)

    def forward(self, z, labels):
        x = F.relu(self.norms[0](self.project(z).view(len(z), -1, 4, 4), labels))
        for up, norm in zip(self.ups, self.norms[1:]):
            x = F.relu(norm(up(x), labels))
        return torch.tanh(self.to_rgb(x))


@torch.no_grad()
def refresh_batchnorm(generator, num_classes, z_dim, device, batches=16, batch_size=64):
    """Recompute the EMA generator's BatchNorm statistics from its own outputs ("standing
    statistics", as in BigGAN): averaged weights do not match the statistics the training weights
    gathered, and with those the eval-mode samples lost most of their class differences."""
    draws = torch.Generator().manual_seed(0)  # leaves the training random stream alone
    for module in generator.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, z_dim, generator=draws).to(device),
                  torch.randint(num_classes, (batch_size,), generator=draws).to(device))
    generator.eval()


class Discriminator(nn.Module):
    """image, class -> realness score: spectral-norm convs halving the size down to 4x4, global
    sum pooling, a linear score plus the projection <embed(class), features>."""

    def __init__(self, num_classes, img_size=32, width=64):
        super().__init__()
        layers, channels = [], 3
        for stage in range(int(math.log2(img_size // 4))):
            layers += [spectral_norm(nn.Conv2d(channels, width * 2 ** stage, 4, 2, 1)),
                       nn.LeakyReLU(0.1, inplace=True)]
            channels = width * 2 ** stage
        self.features = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Linear(channels, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, channels))

    def forward(self, images, labels):
        h = self.features(images).sum((2, 3))
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(1)


def diff_augment(x, translation=0.125, cutout=0.5):
    """DiffAugment's colour, translation and cutout, built from differentiable tensor ops only, so
    the generator's gradient passes through the same augmentation the discriminator sees."""
    n, _, h, w = x.shape
    rand = lambda *shape: torch.rand(n, *shape, device=x.device, dtype=x.dtype)
    x = x + (rand(1, 1, 1) - 0.5)  # brightness
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (rand(1, 1, 1) * 2) + mean  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (rand(1, 1, 1) + 0.5) + mean  # contrast

    # translation by up to 1/8 of the side, the uncovered border filled with zeros (mid-grey)
    pad = int(h * translation + 0.5)
    shift_y = torch.randint(-pad, pad + 1, (n, 1, 1), device=x.device)
    shift_x = torch.randint(-pad, pad + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None] + shift_y + pad
    cols = torch.arange(w, device=x.device)[None, None, :] + shift_x + pad
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    x = padded[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)

    # cutout: one square of half the side, anywhere (partly outside is allowed), set to zero
    size = int(h * cutout + 0.5)
    top = torch.randint(-(size // 2), h - size // 2 + 1, (n, 1, 1), device=x.device)
    left = torch.randint(-(size // 2), w - size // 2 + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x * (~hole).unsqueeze(1).to(x.dtype)


# ---------------------------------------------------------------- data

def training_split(args):
    """(the images train.py trains on with --split-seed = this --seed, class names)."""
    ds = read_dataset(resolve_data_dir(args.data))
    train, _, _ = train_val_split(ds, args.val_fraction, args.block, args.seed)
    return take_fraction(train, args.train_fraction, args.seed), ds["classes"]


def load_training_images(args):
    """The training split as (uint8 N x 3 x S x S tensor, class index tensor, class names)."""
    train, classes = training_split(args)
    to_index = {c: i for i, c in enumerate(classes)}
    size = (args.img_size, args.img_size)
    images = np.stack([np.asarray(Image.fromarray(load_rgb(p)).resize(size, Image.BICUBIC))
                       for p in train.paths])
    labels = torch.tensor([to_index[c] for c in train.labels])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes


def to_unit_range(images):
    """uint8 [0, 255] -> float [-1, 1], the generator's tanh range."""
    return images.float() / 127.5 - 1


# ---------------------------------------------------------------- Frechet distance

class FrechetDistance:
    """FD between a fixed subset of real images and generated images with the same labels and
    fixed noise, overall and per class; real features are computed once."""

    def __init__(self, images, labels, max_images, z_dim, device, dtype, seed):
        self.device, self.dtype = device, dtype
        draws = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(images), generator=draws)[:max_images]
        self.labels = labels[pick]
        self.noise = torch.randn(len(pick), z_dim, generator=draws)
        # head unused
        self.network = build_model("efficientnet_lite0", 1, pretrained=True)[0].to(device).eval()
        self.real = self.features(to_unit_range(images[pick]))

    @torch.no_grad()
    def features(self, images):
        """Pooled 1280-d features; [-1, 1] is exactly the (x - 0.5) / 0.5 the weights expect."""
        out = []
        for batch in images.split(100):
            batch = F.interpolate(batch.to(self.device), size=FD_SIZE, mode="bilinear", align_corners=False)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                out.append(self.network.embed(batch).float().cpu())
        return torch.cat(out).double().numpy()

    @torch.no_grad()
    def __call__(self, generator, classes):
        """{"fd": overall, "fd_<class>": per class}; a class with under 2 images gets NaN."""
        fakes = generate(generator, self.noise, self.labels, self.device)
        fake = self.features(fakes)
        labels = self.labels.numpy()
        result = {"fd": frechet_distance(self.real, fake)}
        for i, name in enumerate(classes):
            mine = labels == i
            result[f"fd_{name}"] = (frechet_distance(self.real[mine], fake[mine]) if mine.sum() >= 2
                                    else float("nan"))
        return result


def frechet_distance(real, fake):
    """|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr sqrtm(S_r S_f) between two (n, d) feature sets.

    With S_f = X^T X (X the centred fake features / sqrt(n - 1)), S_r S_f and X S_r X^T have the
    same nonzero eigenvalues, so the trace term comes from the n x n symmetric X S_r X^T: exact,
    and far cheaper than sqrtm of the 1280 x 1280 product when n is a few hundred.
    """
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r = np.cov(real, rowvar=False)
    x = (fake - mu_f) / np.sqrt(len(fake) - 1)
    cross = scipy.linalg.sqrtm(x @ cov_r @ x.T)
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + (x ** 2).sum() - 2 * np.trace(cross).real)


# ---------------------------------------------------------------- sampling and plots

@torch.no_grad()
def generate(generator, noise, labels, device, batch_size=256):
    """Images in [-1, 1] on the CPU for given noise and labels, in eval mode."""
    generator.eval()
    out = [generator(z.to(device), y.to(device)).float().cpu()
           for z, y in zip(noise.split(batch_size), labels.split(batch_size))]
    return torch.cat(out)


def to_uint8(images):
    """[-1, 1] N x 3 x H x W -> uint8 N x H x W x 3 arrays for PIL and matplotlib."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def save_grid(images, classes, path, title):
    """One row per class (images grouped by class in order), class names as row labels."""
    plt = pyplot()
    rows = to_uint8(images).reshape(len(classes), -1, *images.shape[2:], 3)
    cols = rows.shape[1]
    fig, axes = plt.subplots(len(classes), 1, figsize=(cols * 0.8 + 1.2, len(classes) * 0.85 + 0.4),
                             squeeze=False)
    for ax, row, name in zip(axes[:, 0], rows, classes):
        ax.imshow(np.concatenate(list(row), axis=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(rows, path):
    plt = pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("d_loss", "g_loss"):
        axes[0].plot(epochs, [float(r[key]) for r in rows], label=key)
    measured = [(int(r["epoch"]), float(r["fd"])) for r in rows if r["fd"]]
    if measured:
        axes[1].plot(*zip(*measured), marker="o", label="fd (all classes)")
    axes[0].set_title("hinge losses")
    axes[1].set_title(FD_NOTE, fontsize=9)
    save_epoch_figure(fig, axes, path)


# ---------------------------------------------------------------- training

def parse_train_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in digits set)")
    p.add_argument("--img-size", type=int, default=32, choices=(32, 64))
    p.add_argument("--epochs", type=int, help="default 100; with --resume, a new total")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32,
                   help="channels at the largest resolution (64: about 3x slower per epoch)")
    p.add_argument("--z-dim", type=int, default=128, help="noise size")
    p.add_argument("--lr", type=float, default=1e-4, help="generator learning rate")
    p.add_argument("--d-lr", type=float, default=4e-4,
                   help="discriminator learning rate: 4x the generator's (TTUR, as SAGAN), "
                        "one D step per G step")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the generator's weights")
    p.add_argument("--balance-classes", action="store_true",
                   help="draw every class equally often "
                        "(long-tailed data: rare classes drift towards common ones)")
    p.add_argument("--sample-every", type=int, default=10, help="write a sample grid every N epochs")
    p.add_argument("--fd-every", type=int, default=20,
                   help="FD every N epochs, also after 1, 2 and the last (0: never)")
    p.add_argument("--fd-images", type=int, default=500,
                   help="real (and as many generated) images for the FD")
    p.add_argument("--grid-cols", type=int, default=10, help="samples per class in the grids")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help="held out of train/ as train.py does")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="the images of train.py --train-fraction F --split-seed SEED (SEED: this --seed)")
    p.add_argument("--block", type=int, default=NUMBER_BLOCK,
                   help="as train.py: keeps numbered neighbours on one side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--amp", default="auto", choices=AMP, help="as train.py")
    p.add_argument("--name", help="run folder runs/gan-NAME (default: the time)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN (its folder or last.pt) with its own settings")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a last.pt that holds more than weights")
    args = p.parse_args(argv)
    for name in ("batch_size", "width", "z_dim", "sample_every", "fd_images", "grid_cols"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    return args


def read_gan_checkpoint(path, option, trust=False):
    """(path of last.pt, its contents) for a run folder or a last.pt; option names the flag in errors."""
    path = Path(path)
    path = path / "last.pt" if path.is_dir() else path
    try:
        state = load_checkpoint(path, ("generator", "ema"), "gan.py (a last.pt)", "last.pt", trust)
    except UserError as e:
        raise UserError(f"{option}: {e}") from None
    if "settings" not in state and "args" not in state:
        raise UserError(f"{option}: {path} is not a checkpoint written by gan.py (no settings inside)")
    return path, state


def saved_settings(state):
    """gan.py's own options as its checkpoint keeps them ("settings";
    files written before 2026-12: "args")."""
    return argparse.Namespace(**state.get("settings", state.get("args")))


def load_resume_state(args):
    """(args, run folder, last.pt state), or (args, None, None) for a new run. A resumed run keeps
    its settings except --epochs (a new total) and --device."""
    if not args.resume:
        args.epochs = args.epochs or 100
        return args, None, None
    last, state = read_gan_checkpoint(args.resume, "--resume", args.trust_checkpoint)
    saved = argparse.Namespace(**{**vars(parse_train_args([])),
                                  **vars(saved_settings(state))})  # newer: defaults
    saved.epochs, saved.device = args.epochs or saved.epochs, args.device  # more epochs, or another machine
    print(f"resuming {last.parent} after epoch {state['epoch']} of {saved.epochs}")
    return saved, last.parent, state


def epoch_order(labels, balance_classes):
    """Image indices for one epoch: a permutation, or with balance_classes as many draws with
    replacement, every class equally likely (train.py --balance sampler's weights)."""
    if not balance_classes:
        return torch.randperm(len(labels))
    per_image = torch.as_tensor(draw_weights(labels.numpy(), "sampler"), dtype=torch.float32)
    return torch.multinomial(per_image, len(labels), replacement=True)


def train_one_epoch(G, D, ema, opt_g, opt_d, scaler, images, labels, args, device, dtype):
    """One pass over the shuffled images: a D step then a G step per batch; mean losses."""
    G.train()
    order = epoch_order(labels, args.balance_classes)
    batches = order.split(args.batch_size)
    if len(batches) > 1 and len(batches[-1]) < args.batch_size:
        batches = batches[:-1]  # a runt batch gives noisy BatchNorm statistics in G
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    d_total = g_total = 0.0
    for idx in batches:
        real = to_unit_range(images[idx]).to(device, memory_format=memory_format)
        y = labels[idx].to(device)
        z = torch.randn(len(idx), args.z_dim, device=device)
        with autocast():
            fake = G(z, y)
            d_loss = (F.relu(1 - D(diff_augment(real), y)).mean() +
                      F.relu(1 + D(diff_augment(fake.detach()), y)).mean())
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)

        D.requires_grad_(False)  # the G step needs gradients for G only
        with autocast():
            g_loss = -D(diff_augment(fake), y).mean()
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        scaler.update()
        D.requires_grad_(True)
        ema.update_parameters(G)
        d_total += d_loss.item()
        g_total += g_loss.item()
    return d_total / len(batches), g_total / len(batches)


def fd_due(epoch, args):
    return args.fd_every > 0 and (epoch in (1, 2, args.epochs) or epoch % args.fd_every == 0)


def train(args):
    args, run_dir, resumed = load_resume_state(args)
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = amp_dtype(device, args.amp)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    images, labels, classes = load_training_images(args)
    if resumed is not None and resumed["classes"] != classes:
        raise UserError(f"--resume: the data now has classes {classes}, "
                        f"the run was trained on {resumed['classes']}")
    if run_dir is None:  # made only now, so bad data leaves no empty run folder behind
        run_dir = new_run_dir(f"gan-{args.name or time.strftime('%Y%m%d-%H%M%S')}")
        write_json(run_dir / "config.json", {"args": vars(args), "fd_note": FD_NOTE,
                                             "environment": environment()})
    print(f"{len(classes)} classes, {len(images)} training images at {args.img_size} px; "
          f"run folder {run_dir}")

    G = Generator(len(classes), args.img_size, args.z_dim, args.width).to(device, memory_format=memory_format)
    D = Discriminator(len(classes), args.img_size, args.width).to(device, memory_format=memory_format)
    # weights only: the EMA's BatchNorm statistics come from refresh_batchnorm before each use; its decay
    # warms up, or a small set's few steps per epoch would leave the random start in early samples and FDs
    ema = AveragedModel(G, multi_avg_fn=ema_update(args.ema))
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.d_lr, betas=(0.0, 0.9))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start_epoch = 1
    if resumed is not None:
        for module, key in ((G, "generator"), (D, "discriminator"), (ema, "ema"), (opt_g, "opt_g"),
                            (opt_d, "opt_d"), (scaler, "scaler")):
            module.load_state_dict(resumed[key])
        start_epoch = resumed["epoch"] + 1

    grid_labels = torch.arange(len(classes)).repeat_interleave(args.grid_cols)
    grid_noise = torch.randn(len(grid_labels), args.z_dim, generator=torch.Generator().manual_seed(args.seed))
    fd = None
    if args.fd_every > 0:
        print(f"Frechet distances: {FD_NOTE}")
        fd = FrechetDistance(images, labels, args.fd_images, args.z_dim, device, dtype, args.seed)

    for epoch in range(start_epoch, args.epochs + 1):
        started = time.time()
        torch.manual_seed(args.seed * 10_000 + epoch)  # noise and order depend on seed and epoch only
        d_loss, g_loss = train_one_epoch(G, D, ema, opt_g, opt_d, scaler, images, labels, args, device, dtype)
        refresh_batchnorm(ema.module, len(classes), args.z_dim, device)  # before samples, FD and last.pt
        row = {"epoch": epoch, "d_loss": d_loss, "g_loss": g_loss, "seconds": time.time() - started}
        distances = fd(ema.module, classes) if fd_due(epoch, args) else {}
        row.update({key: distances.get(key, "") for key in ["fd"] + [f"fd_{c}" for c in classes]})
        append_csv(run_dir / "log.csv", row)
        plot_losses(read_csv(run_dir / "log.csv"), run_dir / "losses.png")
        if epoch % args.sample_every == 0 or epoch == args.epochs:
            save_grid(generate(ema.module, grid_noise, grid_labels, device), classes,
                      run_dir / f"samples_epoch{epoch:03d}.png", f"EMA generator, epoch {epoch}")
        state = {"epoch": epoch, "settings": vars(args), "classes": classes, "img_size": args.img_size,
                 "generator": G.state_dict(), "discriminator": D.state_dict(), "ema": ema.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "scaler": scaler.state_dict()}
        save_checkpoint(state, False, run_dir)
        fd_text = ""
        if distances:
            per_class = ", ".join(f"{c} {distances[f'fd_{c}']:.1f}" for c in classes)
            fd_text = f" | FD {distances['fd']:.1f} ({per_class}; not Inception-FID)"
        print(f"epoch {epoch:3d} | d_loss {d_loss:.3f} g_loss {g_loss:.3f} | {row['seconds']:.1f}s{fd_text}")
    print(f"done: {run_dir}; sample with: python gan.py sample --run {run_dir} --per-class 100 --out DIR")
    return run_dir


# ---------------------------------------------------------------- the sample subcommand

def parse_sample_args(argv):
    p = argparse.ArgumentParser(prog="gan.py sample",
                                description="write EMA-generator images as DIR/<class>/*.png")
    p.add_argument("--run", help="GAN run folder or its last.pt (default: the latest runs/gan-*)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a last.pt that holds more than weights")
    p.add_argument("--per-class", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="folder for <class>/ subfolders of PNGs")
    p.add_argument("--classes", help="comma-separated class names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.per_class < 1:
        raise UserError("--per-class must be at least 1")
    return args


def sample(args):
    run = args.run or latest_run(required="last.pt", pattern="gan-*", trainer="gan.py")
    path, state = read_gan_checkpoint(run, "--run", args.trust_checkpoint)
    classes, saved = state["classes"], saved_settings(state)
    for name in classes:  # each becomes a folder under --out
        safe_name(name, f"{path}: class")
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else classes
    unknown = [c for c in wanted if c not in classes]
    if unknown or not wanted:
        raise UserError(f"--classes: unknown {unknown or 'none given'}; the run has {', '.join(classes)}")

    device = pick_device(args.device)
    ema = AveragedModel(Generator(len(classes), state["img_size"], saved.z_dim, saved.width))
    ema.load_state_dict(state["ema"])
    G = ema.module.to(device)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    for folder in (out / name for name in wanted):
        if folder.is_dir() and any(folder.iterdir()):
            raise UserError(f"{folder} is not empty: "
                            "choose a new --out so earlier samples are never mixed in")
    for name in wanted:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        labels = torch.full((args.per_class,), classes.index(name))
        images = to_uint8(generate(G, torch.randn(args.per_class, saved.z_dim), labels, device))
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"gan_{i:05d}.png")
    print(f"wrote {args.per_class} images per class for {', '.join(wanted)} into {out}/ "
          f"({state['img_size']} px, from {path}, epoch {state['epoch']})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sample"]:
        sample(parse_sample_args(argv[1:]))
    else:
        train(parse_train_args(argv))


if __name__ == "__main__":
    run_cli(main, "interrupted: last.pt holds the last finished epoch; "
                  "continue with python gan.py --resume runs/NAME")
