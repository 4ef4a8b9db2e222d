"""Train an image classifier on a competition folder: one explicit loop, every run in runs/NAME/.

Usage:
    python train.py                                    # built-in digits set (or ./data), small CNN
    python train.py --pretrained --aug heavy           # efficientnet_lite0, ImageNet weights, 128 px
    python train.py --data ../shared/data/vehicles6 --arch smallcnn --aug light
    python train.py --balance sampler --loss ce --switch-to-focal-epoch 5 --ema 0.999
    python train.py --balance effective --mix cutmix --heavy-classes pickup,truck
    python train.py --synthetic runs/gan-NAME/samples --synthetic-ratio 0.5      # add generated images
    python train.py --init runs/NAME --hard-fraction 0.2 --epochs 3 --lr 3e-4     # fine-tune on hard examples
    python train.py --resume runs/NAME                 # continue an interrupted run from last.pt

The loop: AMP (bf16/fp16 on CUDA), AdamW or SGD, per-batch learning rate with a linear warmup into
OneCycle's cosine annealing, cross-entropy or focal loss (optionally switching from CE to focal at
an epoch), label smoothing, mixup/cutmix, class balancing (balance.py: samplers, loss weights,
over/undersampling, synthetic images), EMA of weights, head-only epochs for pretrained backbones,
early stopping, best.pt on improvement and last.pt every epoch. Synthetic images only ever join the
training set, never validation.
Validation uses val/ when the folder has one, else a stratified split of train/ that keeps
near-duplicates (consecutive frames) on one side.

Each run folder holds config.json (arguments, package versions, git commit), log.csv (one row per
epoch), curves.png (redrawn every epoch), split.csv (which images trained and validated), best.pt and last.pt.
"""
import argparse
import math
import os
import time
from pathlib import Path

from choices import AMP, ARCHS, ATTENTIONS, AUGMENTATIONS, BALANCE_METHODS, UPSCALE, HelpFormatter

# What the recipe flags become when not given, by model kind. The small CNN trains from scratch with
# SGD, small batches, label smoothing and dropout (its learning rate is the best on validation of the
# recipe grid: reports/recipe-full.md). Pretrained backbones fine-tune with AdamW, as the plain script
# in ../shared/bench does. Input size and epochs come from the data (derive_defaults).
DEFAULTS = {"smallcnn": dict(width=32, optimizer="sgd", lr=0.025, weight_decay=5e-4, label_smoothing=0.1, drop=0.2),
            "backbone": dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, label_smoothing=0.1, drop=0.0)}
# The training budget: EPOCHS at SIZE px, more epochs at a smaller input size (an epoch costs less);
# at least MIN_STEPS optimizer steps, so that a small dataset still trains, but never more than 3x the
# epochs. Pretrained: 7 epochs at 192 px (8 at 160) on 85% of train/, which on 2 CPU cores takes less
# time than the plain fine-tuning script's 6 epochs at 160 px on all of it (reports/vs_plain.md).
BUDGET = {"smallcnn": dict(size=64, epochs=10), "backbone": dict(size=192, epochs=7)}
MIN_STEPS = 300
SMALL_DATASET = 1000  # fewer training images than this: batches of 16, twice the optimizer steps
WORKERS = min(8, max(0, (os.cpu_count() or 1) - 1))  # the main process keeps a core for the model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="competition folder (default: ./data, else the built-in digits set)")
    g.add_argument("--val-fraction", type=float, default=0.15, help="held out of train/ when there is no val/")
    g.add_argument("--block", type=int, default=25, help="numbered files in blocks of N stay on one side of the split")
    g.add_argument("--split-seed", type=int, help="seed of the validation split and of --train-fraction (default: "
                                                  "--seed); fix it to train every seed on the same images")
    g.add_argument("--train-fraction", type=float, default=1.0, help="train on this stratified fraction (low-data studies)")
    g = p.add_argument_group("model")
    g.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (efficientnet_lite0)")
    g.add_argument("--arch", choices=ARCHS, help="default: smallcnn, or efficientnet_lite0 with --pretrained")
    g.add_argument("--attention", default="none", choices=ATTENTIONS, help="SE/CBAM on the last feature map")
    g.add_argument("--width", type=int, help="smallcnn's first-stage channels, doubled in each next (default 32)")
    g.add_argument("--drop", type=float, help="dropout before the head (default 0.2 from scratch, 0 pretrained)")
    g.add_argument("--init", metavar="RUN", help="start from RUN's best weights (its arch, size and attention)")
    g = p.add_argument_group("input and augmentation")
    g.add_argument("--img-size", type=int, help="input size (default: the images' median short side, within 32-64 px "
                                                "from scratch and 160-192 px pretrained)")
    g.add_argument("--upscale", default="bicubic", choices=UPSCALE, help="interpolation when enlarging")
    g.add_argument("--aug", default="light", choices=AUGMENTATIONS, help="training augmentation (augment.py)")
    g.add_argument("--vflip", action="store_true", help="vertical flips too (--aug light/heavy), and in TTA")
    g.add_argument("--mix", default="none", choices=("none", "mixup", "cutmix"), help="mix pairs of training images")
    g.add_argument("--mix-alpha", type=float, default=1.0, help="Beta(alpha, alpha) of the mixing ratio")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="default: 10 at 64 px from scratch, 7 at 192 px pretrained, more at "
                                              "smaller sizes and for small datasets (derive_defaults)")
    g.add_argument("--batch-size", type=int, help="default 32, 16 under 1,000 training images")
    g.add_argument("--optimizer", choices=("adamw", "sgd"), help="default sgd (Nesterov) from scratch, adamw pretrained")
    g.add_argument("--lr", type=float, help="peak learning rate (default 0.025 from scratch, 1e-3 pretrained)")
    g.add_argument("--weight-decay", type=float, help="default 5e-4 from scratch (SGD), 0.01 pretrained (AdamW)")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup before the annealing")
    g.add_argument("--freeze-epochs", type=int, default=0, help="train only the head for the first N epochs")
    g.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.999 (0: off)")
    g.add_argument("--label-smoothing", type=float, help="default 0.1")
    g.add_argument("--monitor", default="val_acc", choices=("val_acc", "val_loss", "val_f1"),
                   help="what early stopping and best.pt follow")
    g.add_argument("--patience", type=int, default=5, help="stop after N epochs without improvement")
    g = p.add_argument_group("loss, class balancing, hard examples and synthetic images (balance.py)")
    g.add_argument("--loss", default="ce", choices=("ce", "focal"))
    g.add_argument("--focal-gamma", type=float, default=2.0)
    g.add_argument("--switch-to-focal-epoch", type=int, default=0, help="use focal loss from this epoch on (0: never)")
    g.add_argument("--balance", default="none", choices=BALANCE_METHODS, help="class balancing")
    g.add_argument("--cb-beta", type=float, default=0.999, help="beta of --balance effective")
    g.add_argument("--heavy-classes", default="", help="comma-separated classes trained with --aug heavy")
    g.add_argument("--oversample-classes", default="", help="comma-separated classes repeated --oversample-factor times")
    g.add_argument("--oversample-factor", type=float, default=2.0)
    g.add_argument("--hard-fraction", type=float, default=0.0,
                   help="with --init: draw this fraction of highest-loss training images more often")
    g.add_argument("--hard-factor", type=float, default=4.0, help="how much more often hard examples are drawn")
    g.add_argument("--synthetic", metavar="DIR", help="generated images in DIR/<class>/ (python gan.py sample)")
    g.add_argument("--synthetic-ratio", type=float, default=0.5,
                   help="synthetic images per class, as a fraction of its real training images")
    g.add_argument("--synthetic-aug", default="light", choices=AUGMENTATIONS, help="pipeline for synthetic images")
    g.add_argument("--synthetic-only", action="store_true",
                   help="train on all of DIR's images and no real ones (Classification Accuracy Score)")
    g = p.add_argument_group("run")
    g.add_argument("--name", help="run folder name under runs/ (default: ARCH-AUG-TIME)")
    g.add_argument("--resume", metavar="RUN", help="continue RUN (its folder or last.pt) with its own settings")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=WORKERS, help="data loader processes")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument("--amp", default="auto", choices=AMP, help="auto: bf16 or fp16 on CUDA, off on the CPU")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a --resume/--init file that holds more than weights (it could run code)")
    args = p.parse_args(argv)
    args.arch = args.arch or ("efficientnet_lite0" if args.pretrained else "smallcnn")
    for key, value in DEFAULTS["smallcnn" if args.arch == "smallcnn" else "backbone"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


if __name__ == "__main__":
    parse_args()  # --help and mistyped options answer here, before torch and friends take seconds to load

# The heavy imports come after that early parse, on purpose.
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms import v2
from tqdm import tqdm

from augment import build_transform, input_size
from balance import (BalanceOptions, class_counts, find_hard_examples, loss_weights, make_sampler,
                     training_images)
from data import ImageDataset, make_loader, read_dataset, resolve_data_dir, take_fraction, train_val_split
from models import build_model, load_run
from utils import (UserError, amp_dtype, append_csv, check_writable, environment, load_checkpoint, lock_run,
                   new_run_dir, pick_device, plot_curves, read_csv, run_cli, save_checkpoint, seed_everything,
                   write_json)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma, so examples the
    model already gets right count less. gamma=0 is exactly cross-entropy, weights and smoothing
    included. Targets are class indices, or class probabilities after mixup/cutmix."""

    def __init__(self, gamma=2.0, weight=None, label_smoothing=0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        logits = logits.float()
        ce = F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing, reduction="none")
        soft = target if target.dim() == 2 else F.one_hot(target, logits.shape[1]).float()
        p_true = (logits.softmax(1) * soft).sum(1)
        loss = (1 - p_true).pow(self.gamma) * ce
        return loss.sum() / ((soft @ self.weight).sum() if self.weight is not None else len(target))


def warmup_one_cycle(warmup_steps, total_steps, final_factor=1e-2):
    """LR factor per step: linear rise to the peak over the warmup, then OneCycle's cosine annealing
    to final_factor of the peak. (torch's OneCycleLR warms up along a cosine, not linearly.)"""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def ema_update(decay):
    """AveragedModel's update with the decay warmed up as TensorFlow's ExponentialMovingAverage does with
    num_updates: min(decay, (1 + n) / (10 + n)) after n updates. A fixed decay of 0.99 or more would keep
    the random initial weights in the average through most of a short run; warmed up, 0.999 is reached
    after about 9,000 updates."""
    @torch.no_grad()
    def update(averaged, current, num_averaged):
        n = float(num_averaged)
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for avg, cur in zip(averaged, current):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:  # BatchNorm's batch counter
                avg.copy_(cur)
    return update


def make_criterion(args, epoch, class_weights):
    """CE, or focal from the start (--loss focal) or from --switch-to-focal-epoch on."""
    focal = args.loss == "focal" or 0 < args.switch_to_focal_epoch <= epoch
    return FocalLoss(args.focal_gamma if focal else 0.0, class_weights, args.label_smoothing), "focal" if focal else "ce"


def derive_defaults(args, train):
    """Fill in the input size, batch size and epochs the user left out, from the model kind and the
    training images (augment.input_size, BUDGET); returns {setting: why} for config.json and the console."""
    kind = "smallcnn" if args.arch == "smallcnn" else "backbone"
    budget, why = BUDGET[kind], {}
    if args.img_size is None:
        short_side = float(np.median(train.sizes.min(1)))
        args.img_size = input_size(short_side, pretrained=kind == "backbone")
        why["img_size"] = f"median short side {short_side:.0f} px"
    if args.batch_size is None:
        args.batch_size = 16 if len(train.paths) < SMALL_DATASET else 32
        why["batch_size"] = f"{len(train.paths)} training images"
    if args.epochs is None:
        steps_per_epoch = max(1, len(train.paths) // args.batch_size)
        epochs = round(budget["epochs"] * budget["size"] / args.img_size)
        args.epochs = min(3 * epochs, max(epochs, math.ceil(MIN_STEPS / steps_per_epoch)))
        why["epochs"] = (f"{budget['epochs']} at {budget['size']} px scaled to {args.img_size} px, at least "
                         f"{MIN_STEPS} steps of {steps_per_epoch}")
    return why


def print_split(rows, run_dir):
    """The per-class train/validation counts, on the console and in split_counts.csv."""
    width = max(len("class"), *(len(r["class"]) for r in rows))
    print(f"{'class':<{width}}  train    val  share")
    for r in rows:
        print(f"{r['class']:<{width}}  {r['train']:5d}  {r['held_out']:5d}  {r['share']:5.1%}")
        append_csv(run_dir / "split_counts.csv", r)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, ema, mix, device, dtype, desc):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=None):
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        if mix is not None:  # targets become class probabilities
            images, targets = mix(images, targets)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == (targets.argmax(1) if targets.dim() == 2 else targets)).sum().item()
        seen += len(targets)
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(model, loader, device, dtype):
    """Mean cross-entropy, accuracy and macro-F1 on a labeled loader."""
    model.eval()
    losses, preds, labels = [], [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images).float()
        losses.append(F.cross_entropy(logits, targets.to(device), reduction="sum").item())
        preds.append(logits.argmax(1).cpu())
        labels.append(targets)
    preds, labels = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    return {"val_loss": sum(losses) / len(labels), "val_acc": float((preds == labels).mean()),
            "val_f1": float(f1_score(labels, preds, average="macro"))}


def resume_state(args):
    """(saved args, run folder, last.pt state) of --resume RUN."""
    last = Path(args.resume)
    last = last / "last.pt" if last.is_dir() else last
    state = load_checkpoint(last, ("model", "optimizer", "args", "epoch"), "train.py (a last.pt)",
                            trust=args.trust_checkpoint)
    saved = argparse.Namespace(**state["args"])
    saved.workers, saved.device = args.workers, args.device  # where it runs now may differ
    saved.trust_checkpoint = args.trust_checkpoint
    print(f"resuming {last.parent} after epoch {state['epoch']}")
    return saved, last.parent, state


def repair_log(log_path, last_row):
    """Make log.csv end at the checkpoint's epoch: rows written after it (a crash between the row and the
    next checkpoint) go, and the checkpoint's own row comes back if the crash came before it was logged."""
    rows = [r for r in read_csv(log_path) if int(r["epoch"]) < last_row["epoch"]] if log_path.exists() else []
    log_path.unlink(missing_ok=True)
    for row in rows + [last_row]:
        append_csv(log_path, row)
    for stale in log_path.parent.glob("*.tmp"):  # a checkpoint write the crash cut short
        stale.unlink()


def main(argv=None):
    args = parse_args(argv)
    resumed = None
    if args.resume:
        args, run_dir, resumed = resume_state(args)
    else:
        args.data = str(resolve_data_dir(args.data))  # config.json names the folder actually used
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = amp_dtype(device, args.amp)
    torch.backends.cudnn.benchmark = True

    ds = read_dataset(args.data)
    classes = ds["classes"]
    split_seed = args.seed if args.split_seed is None else args.split_seed
    train, val, split_rows = train_val_split(ds, args.val_fraction, args.block, split_seed)
    train = take_fraction(train, args.train_fraction, split_seed)
    if resumed is None:
        derived = derive_defaults(args, train)
        run_dir = new_run_dir(args.name or f"{args.arch}-{args.aug}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_lock = lock_run(run_dir)  # held while this process lives
    if resumed is None:
        write_json(run_dir / "config.json", {"args": vars(args), "derived": derived, "environment": environment()})
        print_split(split_rows, run_dir)
        print("derived from the data: " + "; ".join(f"{k} {getattr(args, k)} ({why})" for k, why in derived.items()))
    balance = BalanceOptions.from_args(args)
    train_paths, train_targets, pipeline = training_images(train, classes, balance)
    counts = class_counts([classes.index(c) for c in train.labels], len(classes))  # real images: the prior
    if resumed is None:
        synthetic = [path for path, name in zip(train_paths, pipeline) if name == "synthetic"]
        for split_name, paths, labels in (("train", train.paths, train.labels), ("val", val.paths, val.labels),
                                          ("synthetic", synthetic, None)):
            for i, path in enumerate(paths):
                label = labels[i] if labels else Path(path).parent.name
                append_csv(run_dir / "split.csv", {"split": split_name, "label": label, "file": path})
    print(f"{len(classes)} classes; train {len(train.paths)} real images (smallest class {counts.min()}, largest "
          f"{counts.max()}), {len(train_paths)} per epoch with balancing and synthetic images; val {len(val.paths)}; "
          f"{args.arch} at {args.img_size} px, batch {args.batch_size}, {args.epochs} epochs; run folder {run_dir}")

    init_model, init = load_run(args.init, trust=args.trust_checkpoint) if args.init else (None, None)
    if init is not None and resumed is None:  # fine-tuning keeps the run's model and input size
        for key in ("arch", "attention", "drop", "width", "img_size", "upscale", "vflip"):
            setattr(args, key, init["args"][key])
        write_json(run_dir / "config.json", {"args": vars(args), "environment": environment()})
    model, mean, std = build_model(args.arch, len(classes), args.pretrained and init is None, args.attention, args.drop,
                                   args.width)
    if init is not None:
        if init["classes"] != classes:
            raise UserError(f"--init {args.init} was trained on classes {init['classes']}, this data has {classes}")
        model.load_state_dict(init_model.state_dict())
    model = model.to(device, memory_format=torch.channels_last)
    eval_transform = build_transform("none", args.img_size, mean, std, args.upscale)
    pipelines = {name: build_transform(aug, args.img_size, mean, std, args.upscale, args.vflip)
                 for name, aug in (("train", args.aug), ("heavy", "heavy"), ("synthetic", args.synthetic_aug))}
    train_set = ImageDataset(train_paths, train_targets, pipelines, pipeline=pipeline)
    val_set = ImageDataset(val.paths, [classes.index(c) for c in val.labels], eval_transform)
    val_loader = make_loader(val_set, args.batch_size * 2, args.workers, device)

    hard_weights = None
    if args.hard_fraction:
        if init is None:
            raise UserError("--hard-fraction needs --init RUN: the model whose mistakes define the hard examples")
        hard_weights = np.asarray(resumed["hard_weights"]) if resumed is not None else find_hard_examples(
            model, train_set, classes, run_dir, balance, (args.batch_size * 2, args.workers, device, dtype),
            eval_transform)
    draws_per_epoch = len(make_sampler(train_targets, args.balance, 0, hard_weights) or train_set)
    steps_per_epoch = draws_per_epoch // args.batch_size if draws_per_epoch > args.batch_size else 1
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                    weight_decay=args.weight_decay)
    schedule = warmup_one_cycle(round(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = AveragedModel(model, multi_avg_fn=ema_update(args.ema), use_buffers=True) if args.ema else None
    mix = {"none": None, "mixup": v2.MixUp, "cutmix": v2.CutMix}[args.mix]
    mix = mix(alpha=args.mix_alpha, num_classes=len(classes)) if mix else None
    class_weights = loss_weights(args.balance, counts, args.cb_beta)
    if class_weights is not None:
        class_weights = class_weights.to(device)
        print("class weights in the loss: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(classes, class_weights)))

    # best.pt and last.pt, each with the model, its EMA and the optimizer's moments, and room to write a new one
    check_writable(run_dir, 6 * 4 * sum(p.numel() for p in model.parameters()) + 2**20)
    start_epoch, best_score, bad_epochs = 1, None, 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        if ema is not None:
            ema.load_state_dict(resumed["ema"])
        start_epoch, best_score, bad_epochs = resumed["epoch"] + 1, resumed["best_score"], resumed["bad_epochs"]
        repair_log(run_dir / "log.csv", resumed["metrics"])
        if bad_epochs >= args.patience:  # it had already stopped early
            start_epoch = args.epochs + 1

    sign = -1 if args.monitor == "val_loss" else 1  # compare scores as "higher is better"
    for epoch in range(start_epoch, args.epochs + 1):
        started = time.time()
        criterion, loss_name = make_criterion(args, epoch, class_weights)
        if loss_name == "focal" and args.switch_to_focal_epoch == epoch:
            print(f"epoch {epoch}: switching the loss from cross-entropy to focal (gamma {args.focal_gamma})")
        head_only = epoch <= args.freeze_epochs
        for param in model.features.parameters():
            param.requires_grad_(not head_only)
        epoch_seed = args.seed * 10_000 + epoch  # order, augmentation, dropout and mixing depend on seed and epoch only
        torch.manual_seed(epoch_seed)
        sampler = make_sampler(train_targets, args.balance, epoch_seed, hard_weights)
        train_loader = make_loader(train_set, args.batch_size, args.workers, device, shuffle=True, sampler=sampler,
                                   seed=epoch_seed)
        train_loss, train_acc = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, scaler, ema,
                                                mix, device, dtype, desc=f"epoch {epoch}/{args.epochs}")
        metrics = evaluate(ema.module if ema is not None else model, val_loader, device, dtype)
        score = sign * metrics[args.monitor]
        is_best = best_score is None or score > best_score
        best_score, bad_epochs = (score, 0) if is_best else (best_score, bad_epochs + 1)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "loss_fn": loss_name, "head_only": head_only,
               "train_loss": train_loss, "train_acc": train_acc, **metrics, "seconds": time.time() - started}
        state = {"epoch": epoch, "args": vars(args), "classes": classes, "mean": mean, "std": std,
                 "class_counts": counts.tolist(),
                 "hard_weights": None if hard_weights is None else hard_weights.tolist(), "metrics": row,
                 "model": model.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "best_score": best_score,
                 "bad_epochs": bad_epochs}
        save_checkpoint(state, is_best, run_dir)
        append_csv(run_dir / "log.csv", row)  # after the checkpoint: a resumed run repairs a missing row
        plot_curves(read_csv(run_dir / "log.csv"), run_dir / "curves.png")
        print(f"epoch {epoch:3d} | {loss_name} loss {train_loss:.4f} acc {train_acc:.4f} | val loss "
              f"{metrics['val_loss']:.4f} acc {metrics['val_acc']:.4f} f1 {metrics['val_f1']:.4f} | "
              f"{row['seconds']:.0f}s{' | best' if is_best else ''}")
        if bad_epochs >= args.patience:
            print(f"early stop: {args.monitor} has not improved for {args.patience} epochs")
            break
    print(f"done: {run_dir} (best {args.monitor} {abs(best_score):.4f}); next: python predict.py --run {run_dir}")
    return run_dir


if __name__ == "__main__":
    run_cli(main, "interrupted: last.pt holds the last finished epoch; go on with python train.py --resume runs/NAME")
