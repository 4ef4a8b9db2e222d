"""Train an image classifier on a competition folder: one explicit loop, every run in runs/NAME/.

Usage:
    python train.py                                    # built-in digits set (or ./data), small CNN (poolcnn)
    python train.py --pretrained --aug heavy           # efficientnet_lite0 with ImageNet weights
    python train.py --data ../shared/data/vehicles6 --arch smallcnn --aug light
    python train.py --pretrained --aug heavy --folds 5 # k-fold CV; then python predict.py averages the folds
    python train.py --balance sampler --switch-to-focal-on-plateau 2 --schedule cosine --ema 0.999
    python train.py --synthetic runs/gan-NAME/samples --synthetic-ratio 0.5      # add generated images
    python train.py --init runs/NAME --hard-fraction 0.2 --epochs 3 --lr 3e-4     # fine-tune on hard examples
    python train.py --resume runs/NAME                 # continue an interrupted run from last.pt
    torchrun --nproc_per_node 8 train.py --pretrained  # one process per GPU

The loop (main): mixed precision, AdamW or SGD, a learning rate stepped every batch through a linear
warmup into OneCycle's cosine annealing (or --schedule), cross-entropy or focal loss (switching from CE
to focal at an epoch or when the metric stalls), label smoothing, mixup/cutmix, class balancing
(balance.py), EMA of the weights, head-only epochs, a pretrained stem and early stages kept frozen,
progressive resizing (smaller images first, shrunk on the device), early stopping, best.pt when the
monitored metric improves and last.pt every epoch.
Settings are made in one place, resolve_settings: what the command line leaves out comes from the model
kind (DEFAULTS) and the data (derive_defaults: input size, test size, batch size, epochs, progressive
resizing), is printed with its source, and is read-only from then on. Validation uses val/ when the
folder has one, else a stratified 15% of train/ that keeps near-duplicates on one side
(data.holdout_split); synthetic and pseudo-labeled images only ever join the training set.

Each run folder holds config.json (every setting, where each one not given came from, package
versions, git commit), split_counts.csv and split.csv (which images trained and validated), log.csv (a
row per epoch), curves.png, best.pt and last.pt (weights_only=True files: the weights, the training
state, and an `inference` section, all that predict.py needs, apart from train.py's options).
"""
import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from choices import (
    AMP,
    ARCHS,
    ATTENTIONS,
    AUGMENTATIONS,
    BALANCE_METHODS,
    FRACTION,
    IMAGE_SIZE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    NUMBER_BLOCK,
    POSITIVE,
    POSITIVE_INT,
    PROBABILITY,
    SCRATCH_ARCHS,
    UPSCALE,
    VAL_FRACTION,
    WORKERS_HELP,
    HelpFormatter,
    arch,
    bounded,
    image_size_or_off,
)

# What the recipe flags become when not given, by model kind. The small CNNs train from scratch with
# SGD, small batches, label smoothing and dropout (the learning rate is the best on validation of the
# recipe grid: reports/archive/recipe-full.md). Pretrained backbones fine-tune with AdamW, as the plain
# script in ../shared/bench does. Input size and epochs come from the data (derive_defaults).
DEFAULTS = {"scratch": dict(width=32, optimizer="sgd", lr=0.025, weight_decay=5e-4, label_smoothing=0.1,
                            drop=0.2),
            "backbone": dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, label_smoothing=0.1, drop=0.0)}
# The training budget: EPOCHS at SIZE px, more epochs at a smaller input size (an epoch costs less);
# at least MIN_STEPS optimizer steps, so that a small dataset still trains, but never more than 3x the
# epochs; the first epochs at PROGRESSIVE times the input size (epoch_img_size). Against the plain
# scripts in ../shared/bench on every shared set (reports/vs_plain.md): from scratch, poolcnn's 14 epochs
# at 64 px reach their test accuracy in under half their time, where smallcnn took 30 epochs and about as
# long. Pretrained, 5 epochs at 160 px from 128 px take 0.38-0.42 of their time and tie their accuracy
# (within 2 SE over 3-4 seeds; 1.4 points under on trashnet6), where 7 at 192 px took 0.6-1.0 of it;
# 200 steps keep the 5 epochs on sets of 1,300-1,700 images, where 300 made them 8 and 6.
BUDGET = {"scratch": dict(size=64, epochs=14, min_steps=300, progressive=0),
          "backbone": dict(size=160, epochs=5, min_steps=200, progressive=0.8)}
PLOT_EVERY_S = 60  # drawing curves.png takes 1-2 s on a CPU: up to a fifth of a small CNN epoch
SMALL_DATASET = 1000  # fewer training images than this: batches of 16, twice the optimizer steps


def parse_args(argv=None):
    """The command line as given: every setting it leaves out is None until resolve_settings fills it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    for add_options in (data_options, model_options, input_options, optimisation_options, balance_options,
                        run_options):
        add_options(p)
    return p.parse_args(argv)


def data_options(p):
    g = p.add_argument_group("data")
    g.add_argument("--data", help="competition folder (default: ./data, else the built-in digits set)")
    g.add_argument("--val-fraction", type=bounded(float, 0, 1, open_high=True), default=VAL_FRACTION,
                   help="held out of train/ when there is no val/; 0: train on all of it (a final fit, with "
                        "the epochs cross-validation chose) and keep the last epoch")
    g.add_argument("--block", type=NON_NEGATIVE_INT, default=NUMBER_BLOCK,
                   help="numbered files in blocks of N stay on one side of the split")
    g.add_argument("--split-seed", type=int,
                   help="seed of the validation split and of --train-fraction (default: "
                        "--seed); fix it to train every seed on the same images")
    g.add_argument("--train-fraction", type=bounded(float, 0, 1, open_low=True), default=1.0,
                   help="train on this stratified fraction (low-data studies)")
    g.add_argument("--folds", type=NON_NEGATIVE_INT, default=0,
                   help="k-fold cross-validation: train K runs, each holding out one "
                        "leak-free fold, and write out-of-fold predictions")
    g.add_argument("--fold", type=NON_NEGATIVE_INT,
                   help="with --folds: train only this fold (0..K-1), e.g. one per machine, "
                        "with the same --name")


def model_options(p):
    g = p.add_argument_group("model")
    g.add_argument("--pretrained", action="store_true",
                   help="start from ImageNet weights (efficientnet_lite0)")
    g.add_argument("--arch", type=arch, metavar="ARCH",
                   help=f"{', '.join(ARCHS)}, or timm:NAME for any timm model "
                        "(default: poolcnn, efficientnet_lite0 with --pretrained)")
    g.add_argument("--weights", metavar="FILE",
                   help="ImageNet weights for a torchvision or timm --arch: its state_dict in a .pth file "
                        "(offline, e.g. from a Kaggle dataset)")
    g.add_argument("--attention", default="none", choices=ATTENTIONS, help="SE/CBAM on the last feature map")
    g.add_argument("--width", type=POSITIVE_INT,
                   help="the small CNNs' first-stage channels, doubled in each next (default 32)")
    g.add_argument("--drop", type=PROBABILITY,
                   help="dropout before the head (default 0.2 from scratch, 0 pretrained)")
    g.add_argument("--init", metavar="RUN",
                   help="start from RUN's best weights (its arch, size and attention); a run "
                        "of other classes, e.g. on another dataset, gives all but its head")


def input_options(p):
    g = p.add_argument_group("input and augmentation")
    g.add_argument("--img-size", type=IMAGE_SIZE,
                   help="input size (default: the images' median short side within 32-64 px "
                        "from scratch, 160 px pretrained)")
    g.add_argument("--upscale", default="bicubic", choices=UPSCALE, help="interpolation when enlarging")
    g.add_argument("--aug", default="light", choices=AUGMENTATIONS,
                   help="training augmentation (augment.py): none; "
                        "flips (horizontal + vertical, nothing else); light (shift, zoom, horizontal flip); "
                        "heavy (crop, colour, rotation, horizontal flip)")
    g.add_argument("--progressive", type=image_size_or_off, metavar="PX",
                   help="progressive resizing: train the first epochs at PX px, growing linearly to "
                        "--img-size, which the last third of the epochs and validation see; 0: off "
                        "(default: 80%% of --img-size pretrained, off from scratch)")
    g.add_argument("--test-size", type=IMAGE_SIZE, metavar="PX",
                   help="input size predict.py tests at (default: --img-size; 10%% larger after --aug "
                        "heavy, whose crops show objects larger than the whole image does)")
    g.add_argument("--vflip", action="store_true",
                   help="vertical flips in --aug light/heavy too, and in TTA (--aug flips has them)")
    g.add_argument("--mix", default="none", choices=("none", "mixup", "cutmix"),
                   help="mix pairs of training images")
    g.add_argument("--mix-alpha", type=POSITIVE, default=1.0, help="Beta(alpha, alpha) of the mixing ratio")


def optimisation_options(p):
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=POSITIVE_INT,
                   help="default: 30 at 64 px from scratch, 7 at 192 px pretrained, more at "
                        "smaller sizes and for small datasets (derive_defaults)")
    g.add_argument("--batch-size", type=POSITIVE_INT, help="default 32, 16 under 1,000 training images")
    g.add_argument("--optimizer", choices=("adamw", "sgd"),
                   help="default sgd (Nesterov) from scratch, adamw pretrained")
    g.add_argument("--lr", type=NON_NEGATIVE,
                   help="peak learning rate (default 0.025 from scratch, 1e-3 pretrained)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE,
                   help="default 5e-4 from scratch (SGD), 0.01 pretrained (AdamW)")
    g.add_argument("--schedule", default="onecycle", choices=("onecycle", "cosine", "step", "plateau"),
                   help="learning rate after the warmup (LRSchedule)")
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE, default=1.0,
                   help="linear warmup before the schedule")
    g.add_argument("--plateau-patience", type=POSITIVE_INT, default=2,
                   help="--schedule plateau: epochs without improvement "
                        "before each x0.1")
    g.add_argument("--freeze-epochs", type=NON_NEGATIVE_INT, default=0,
                   help="train only the head for the first N epochs")
    g.add_argument("--freeze-stages", type=NON_NEGATIVE_INT, default=0, metavar="N",
                   help="keep a pretrained backbone's stem and first N stages at their ImageNet weights: "
                        "no backward pass through its largest feature maps")
    g.add_argument("--accum", type=POSITIVE_INT, default=1,
                   help="accumulate gradients over N batches per optimizer step")
    g.add_argument("--ema", type=PROBABILITY, default=0.0,
                   help="EMA decay of the weights, e.g. 0.999 (0: off)")
    g.add_argument("--label-smoothing", type=PROBABILITY, help="default 0.1")
    g.add_argument("--monitor", default="val_loss", choices=("val_acc", "val_loss", "val_f1"),
                   help="what early stopping and best.pt follow (the loss: a small validation set's accuracy "
                        "saturates or jumps by single images long before the schedule has annealed)")
    g.add_argument("--patience", type=POSITIVE_INT, default=5,
                   help="stop after N epochs without improvement, once the "
                        "learning rate is down to a tenth of its peak")


def balance_options(p):
    g = p.add_argument_group("loss, class balancing, hard examples and synthetic images (balance.py)")
    g.add_argument("--loss", default="ce", choices=("ce", "focal"))
    g.add_argument("--focal-gamma", type=NON_NEGATIVE, default=2.0)
    g.add_argument("--switch-to-focal-epoch", type=NON_NEGATIVE_INT, default=0,
                   help="use focal loss from this epoch on (0: never)")
    g.add_argument("--switch-to-focal-on-plateau", type=NON_NEGATIVE_INT, default=0, metavar="N",
                   help="use focal loss once the monitored metric has not improved for N epochs (0: never)")
    g.add_argument("--balance", default="none", choices=BALANCE_METHODS, help="class balancing")
    g.add_argument("--cb-beta", type=PROBABILITY, default=0.999, help="beta of --balance effective")
    g.add_argument("--heavy-classes", default="", help="comma-separated classes trained with --aug heavy")
    g.add_argument("--oversample-classes", default="",
                   help="comma-separated classes repeated --oversample-factor times")
    g.add_argument("--oversample-factor", type=POSITIVE, default=2.0)
    g.add_argument("--hard-fraction", type=FRACTION, default=0.0,
                   help="with --init: draw this fraction of highest-loss training images more often")
    g.add_argument("--hard-factor", type=POSITIVE, default=4.0,
                   help="how much more often hard examples are drawn")
    g.add_argument("--synthetic", metavar="DIR",
                   help="generated images in DIR/<class>/ (python gan.py sample)")
    g.add_argument("--synthetic-ratio", type=NON_NEGATIVE, default=0.5,
                   help="synthetic images per class, as a fraction of its real training images")
    g.add_argument("--synthetic-aug", default="light", choices=AUGMENTATIONS,
                   help="pipeline for synthetic images")
    g.add_argument("--synthetic-only", action="store_true",
                   help="train on all of DIR's images and no real ones (Classification Accuracy Score)")
    g.add_argument("--pseudo", metavar="CSV",
                   help="add test images as predicted in CSV (a test_predictions.csv of "
                        "predict.py or ensemble.py, or its folder) to the training set")
    g.add_argument("--pseudo-threshold", type=FRACTION, default=0.99,
                   help="only predictions at least this confident (ensemble.py prints the one the OOF "
                        "supports)")


def run_options(p):
    g = p.add_argument_group("run")
    g.add_argument("--name", help="run folder name under runs/ (default: ARCH-AUG-TIME)")
    g.add_argument("--resume", metavar="RUN",
                   help="continue RUN (its folder or last.pt) with its own settings")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=NON_NEGATIVE_INT, help=WORKERS_HELP)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument("--amp", default="auto", choices=AMP,
                   help="auto: bf16 where the GPU or CPU computes it natively, "
                        "else fp16 on CUDA and fp32 on the CPU")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (pays off on GPUs, rarely on CPUs)")
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over all GPUs")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a --resume/--init file that holds more than weights (it could run code)")


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

from augment import (
    build_transform,
    cache_form,
    input_size,
    model_input,
    resize_batch,
    test_size,
    tta_views,
)
from balance import (
    BalanceOptions,
    class_counts,
    find_hard_examples,
    loss_weights,
    make_sampler,
    training_images,
)
from data import (
    EpochOrder,
    ImageDataset,
    fold_split,
    make_loader,
    read_dataset,
    resolve_data_dir,
    take_fraction,
    train_val_split,
)
from models import build_model, early_stages, load_run
from utils import (
    UserError,
    amp_dtype,
    append_csv,
    check_writable,
    ema_update,
    environment,
    from_rank_zero,
    init_distributed,
    load_checkpoint,
    loader_workers,
    lock_run,
    new_run_dir,
    pick_device,
    plot_curves,
    read_csv,
    run_cli,
    run_folder,
    save_checkpoint,
    seed_everything,
    write_csv,
    write_json,
)


def main(argv=None):
    args = parse_args(argv)
    for settings in runs_to_train(args):  # this run, or each fold of --folds K
        run = prepare(settings)  # data, split, derived defaults, model, optimizer, warmup + OneCycle, resume
        args = run.args
        try:
            train_epochs(run)
        except KeyboardInterrupt:  # run_cli prints this one line, naming the folder
            raise KeyboardInterrupt(f"interrupted: {run.run_dir}/last.pt holds the last finished epoch; go "
                                    f"on with python train.py --resume {run.run_dir}") from None
        if run.rank != 0:
            continue
        print(f"done: {run.run_dir}" + (f" (best {args.monitor} {run.stopper.best_value:.4f})"
                                        if run.val.paths else " (no validation: best.pt is the last epoch)"))
        finished = finish_fold(run) if args.folds else run.run_dir
    if run.world > 1:
        torch.distributed.destroy_process_group()
    if run.rank == 0:
        print(f"next: python predict.py --run {finished}")
        return finished
    return run.run_dir


def train_epochs(run):
    """The loop: an epoch of training, validation, the checkpoints and the log, until the last epoch or an
    early stop. curves.png is redrawn at most every PLOT_EVERY_S seconds, and once at the end."""
    args, plotted = run.args, time.time()
    try:
        for epoch in range(run.start_epoch, args.epochs + 1):
            row, is_best = train_and_validate(run, epoch)
            if run.rank == 0:  # under torchrun, one process writes
                save_checkpoint(run.checkpoint(epoch, row), is_best, run.run_dir)  # best.pt if improved
                append_csv(run.run_dir / "log.csv", row)  # after the checkpoint: resume repairs a missing row
                if time.time() - plotted > PLOT_EVERY_S:
                    plot_curves(read_csv(run.run_dir / "log.csv"), run.run_dir / "curves.png")
                    plotted = time.time()
                print_epoch(run, row, is_best)
            if run.stopper.stop and annealed(run.optimizer):
                print(f"early stop: {args.monitor} has not improved for {run.stopper.bad_epochs} epochs, and "
                      "the learning rate is down to a tenth of its peak")
                break
    finally:  # interrupted too: the figure shows every epoch log.csv holds
        if run.rank == 0 and (run.run_dir / "log.csv").exists():
            plot_curves(read_csv(run.run_dir / "log.csv"), run.run_dir / "curves.png")


def train_and_validate(run, epoch):
    """Training and validation: (the epoch's log row, whether it is the best so far)."""
    args, started = run.args, time.time()
    criterion, loss_name = make_criterion(args, epoch, run.class_weights, run.focal_since)  # CE, then focal
    if loss_name == "focal" and epoch in (args.switch_to_focal_epoch, run.focal_since) and run.rank == 0:
        print(f"epoch {epoch}: switching the loss from cross-entropy to focal (gamma {args.focal_gamma})")
    train_loss, train_acc = train_one_epoch(run, criterion, epoch)
    metrics = evaluate(run, run.eval_model)[0] if run.val.paths else {}
    check_finite(run, epoch, train_loss, metrics)  # before the checkpoint: a NaN model is never saved
    is_best = run.stopper.update(metrics)
    on_plateau(run, epoch)  # --switch-to-focal-on-plateau, --schedule plateau
    return {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"], "loss_fn": loss_name,
            "head_only": epoch <= args.freeze_epochs, "train_loss": train_loss, "train_acc": train_acc,
            **metrics, "seconds": time.time() - started}, is_best


def print_epoch(run, row, is_best):
    scores = (f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} f1 {row['val_f1']:.4f}"
              if "val_loss" in row else "no validation")
    size = f" at {epoch_img_size(run.args, row['epoch'])} px" if run.args.progressive else ""
    print(f"epoch {row['epoch']:3d}{size} | {row['loss_fn']} loss {row['train_loss']:.4f} acc "
          f"{row['train_acc']:.4f} | {scores} | {row['seconds']:.0f}s{' | best' if is_best else ''}")


def annealed(optimizer):
    """Whether the learning rate is down to a tenth of its peak. Early stopping waits for it: at a high
    learning rate the validation metric is noisy and the best epochs come with the anneal (what stopping
    earlier cost: reports/schedules.md)."""
    group = optimizer.param_groups[0]
    return group["lr"] <= 0.1 * group["initial_lr"]


def on_plateau(run, epoch):
    """When the monitored metric has stalled: focal loss from the next epoch (--switch-to-focal-on-plateau
    N, once), and the plateau schedule's cut of the learning rate."""
    args, stalled = run.args, run.stopper.bad_epochs
    if (args.switch_to_focal_on_plateau and run.focal_since is None
            and stalled >= args.switch_to_focal_on_plateau):
        run.focal_since = epoch + 1
    if run.scheduler.lr_lambdas[0].epoch_end(stalled) and run.rank == 0:
        print(f"epoch {epoch}: {args.monitor} stalled for {stalled} epochs: learning rate x0.1")


# ---------------------------------------------------------------- the loop's parts

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
        ce = F.cross_entropy(logits, target, weight=self.weight,
                             label_smoothing=self.label_smoothing, reduction="none")
        soft = target if target.dim() == 2 else F.one_hot(target, logits.shape[1]).float()
        p_true = (logits.softmax(1) * soft).sum(1)
        loss = (1 - p_true).pow(self.gamma) * ce
        return loss.sum() / ((soft @ self.weight).sum() if self.weight is not None else len(target))


class LRSchedule:
    """The learning-rate factor of every optimizer step: a linear rise to the peak over the warmup, then
        onecycle  OneCycle's cosine annealing down to 1% of the peak (torch's OneCycleLR warms up
                  along a cosine, not linearly)
        cosine    cosine annealing down to zero
        step      x0.1 at half and at three quarters of the steps after the warmup
        plateau   x0.1 every time the monitored metric has gone `patience` epochs without improving
    A callable object, so that LambdaLR's state_dict keeps its plateau scale for --resume."""

    def __init__(self, kind, warmup_steps, total_steps, patience=2):
        self.kind, self.warmup_steps, self.total_steps, self.patience = \
            kind, warmup_steps, total_steps, patience
        self.scale = 1.0

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return {"onecycle": 0.01 + 0.99 * cosine, "cosine": cosine,
                "step": 0.1 ** ((progress >= 0.5) + (progress >= 0.75)), "plateau": self.scale}[self.kind]

    def epoch_end(self, bad_epochs):
        """After each epoch: the plateau schedule's cut; True when it cut."""
        if self.kind == "plateau" and bad_epochs and bad_epochs % self.patience == 0:
            self.scale *= 0.1
            return True
        return False


def make_criterion(args, epoch, class_weights, focal_since=None):
    """CE, or focal from the start (--loss focal), from --switch-to-focal-epoch on, or from the epoch
    after the monitored metric stalled for --switch-to-focal-on-plateau epochs (focal_since)."""
    focal = (args.loss == "focal" or 0 < args.switch_to_focal_epoch <= epoch
             or (focal_since is not None and focal_since <= epoch))
    return FocalLoss(args.focal_gamma if focal else 0.0, class_weights,
                     args.label_smoothing), "focal" if focal else "ce"


def print_split(rows, run_dir):
    """The per-class train/validation counts, on the console and in split_counts.csv."""
    width = max(len("class"), *(len(r["class"]) for r in rows))
    print(f"{'class':<{width}}  train    val  share")
    for r in rows:
        print(f"{r['class']:<{width}}  {r['train']:5d}  {r['held_out']:5d}  {r['share']:5.1%}")
    write_csv(run_dir / "split_counts.csv", rows)


def check_finite(run, epoch, train_loss, metrics):
    """Stop with one error line when the loss diverged, keeping the checkpoints of the last good epoch."""
    losses = {"training": train_loss, "validation": metrics.get("val_loss", 0.0)}
    diverged = [f"{name} loss {value}" for name, value in losses.items() if not math.isfinite(value)]
    if diverged:
        kept = f"{run.run_dir}/last.pt holds epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
        raise UserError(f"epoch {epoch}: {' and '.join(diverged)}: training diverged (a learning rate of "
                        f"{run.args.lr:g} too high?); {kept}")


def train_one_epoch(run, criterion, epoch):
    """One pass over the training set: mixed precision, a learning-rate step per optimizer step (the
    warmup, then --schedule), the EMA after every step. Returns (mean loss, accuracy)."""
    model, args = run.model, run.args
    model.train()
    model.features.requires_grad_(epoch > args.freeze_epochs)  # --freeze-epochs: a new head first
    for module in run.frozen:  # --freeze-stages: never trained
        module.requires_grad_(False)
    epoch_seed = args.seed * 10_000 + epoch  # order, augmentation, dropout and mixing
                                             # depend on seed and epoch only
    torch.manual_seed(epoch_seed)
    run.train_order.set_epoch(epoch_order(run, epoch_seed), epoch_seed)
    size = epoch_img_size(args, epoch)
    totals = torch.zeros(3, device=run.device)  # loss sum, correct, images
    run.optimizer.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(tqdm(run.train_loader, desc=f"epoch {epoch}/{args.epochs}",
                                               leave=False, disable=None if run.rank == 0 else True)):
        images = model_input(images, run.device, run.mean, run.std)
        if size != args.img_size:
            images = resize_batch(images, size)
        targets = targets.to(run.device, non_blocking=True)
        if run.mix is not None:  # targets become class probabilities
            images, targets = run.mix(images, targets)
        step_now = (i + 1) % args.accum == 0  # --accum: gradients of N batches, then one step
        with run.net.no_sync() if run.world > 1 and not step_now else contextlib.nullcontext():
            with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
                logits = run.net(images)
            loss = criterion(logits, targets)
            run.scaler.scale(loss / args.accum).backward()
        if step_now:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.scheduler.step()
            if run.ema is not None:
                run.ema.update_parameters(model)
        hits = (logits.argmax(1) == (targets.argmax(1) if targets.dim() == 2 else targets)).sum()
        totals += torch.stack([loss.detach() * len(targets), hits,
                               torch.tensor(len(targets), device=run.device)])
    if run.world > 1:  # every process's share of the epoch
        torch.distributed.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()  # one host sync per epoch, not one per step
    return loss_sum / seen, correct / seen


def epoch_img_size(args, epoch):
    """The input size of this epoch's training batches. --progressive PX: PX at the first epoch, growing
    linearly in steps of 16 px to --img-size, which the last third of the epochs train at: the early
    epochs, where the model learns coarse shapes, cost (PX / img_size)² as much, and the last ones settle
    the batch-norm statistics at the size validation and prediction use."""
    start, full = args.progressive, args.img_size
    ramp = args.epochs - math.ceil(args.epochs / 3)  # epochs before the full size
    if not start or epoch > ramp:
        return full
    return min(full, int(16 * round((start + (full - start) * (epoch - 1) / ramp) / 16)))


def epoch_order(run, epoch_seed):
    """This process's image indices for the epoch, drawn from the seed alone (shuffled, or as
    --balance and hard examples weight them): exact resume, and under torchrun every process takes
    every world-th index of one shared order, the same images a single process would see."""
    generator = torch.Generator().manual_seed(epoch_seed)
    sampler = make_sampler(run.train_targets, run.args.balance, epoch_seed, run.hard_weights)
    order = list(sampler or torch.utils.data.RandomSampler(range(len(run.train_set)), generator=generator))
    return order[run.rank:len(order) // run.world * run.world:run.world]


@torch.no_grad()
def evaluate(run, model):
    """Mean cross-entropy, accuracy and macro-F1 of model on the run's validation images, and the softmax
    of every image."""
    model.eval()
    logits, labels, device = [], [], run.device
    for images, targets in run.val_loader:
        images = model_input(images, device, run.mean, run.std)
        with torch.autocast(device.type, dtype=run.dtype, enabled=run.dtype is not None):
            logits.append(model(images).float().cpu())
        labels.append(targets)
    logits, labels = torch.cat(logits), torch.cat(labels)
    preds = logits.argmax(1).numpy()
    return {"val_loss": F.cross_entropy(logits, labels).item(),
            "val_acc": float((preds == labels.numpy()).mean()),
            "val_f1": float(f1_score(labels.numpy(), preds, average="macro"))}, logits.softmax(1)


class EarlyStopping:
    """Tracks the monitored metric: is this epoch the best so far, and has it stopped improving for
    `patience` epochs? Loss is lower-is-better, the rest higher-is-better. A tie on accuracy or F1 goes
    to the lower validation loss: once validation accuracy saturates (every image right), later
    epochs, which the schedule has annealed further, still count as improvements."""

    def __init__(self, monitor, patience, best=None, bad_epochs=0):
        self.monitor, self.patience, self.bad_epochs = monitor, patience, bad_epochs
        self.best = tuple(best) if best is not None else None  # a checkpoint stores it as a list

    def score(self, metrics):
        loss = -metrics["val_loss"]
        return (loss,) if self.monitor == "val_loss" else (metrics[self.monitor], loss)

    def update(self, metrics):
        if not metrics:  # no validation images (--val-fraction 0): every epoch is the latest and best
            return True
        score = self.score(metrics)
        is_best = self.best is None or score > self.best
        self.best, self.bad_epochs = (score, 0) if is_best else (self.best, self.bad_epochs + 1)
        return is_best

    @property
    def stop(self):
        return self.bad_epochs >= self.patience

    @property
    def best_value(self):
        """The monitored metric at the best epoch."""
        return abs(self.best[0])


@dataclass
class Run:
    """Everything the loop touches, made by prepare(). `model` is the plain module (its weights are
    saved, averaged and frozen); `net` runs the forward passes: the same module, or wrapped for
    torchrun (DistributedDataParallel) and --compile."""
    args: argparse.Namespace
    run_dir: Path
    device: torch.device
    dtype: torch.dtype
    rank: int
    world: int
    classes: list
    counts: np.ndarray
    model: nn.Module
    net: nn.Module
    frozen: list  # --freeze-stages: the backbone's modules that keep their pretrained weights
    mean: tuple
    std: tuple
    train_set: ImageDataset
    train_order: EpochOrder  # set before each epoch; the loader and its workers live as long as the run
    train_loader: torch.utils.data.DataLoader
    train_targets: np.ndarray
    val: object
    val_loader: object
    hard_weights: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    ema: object
    mix: object
    class_weights: object
    stopper: EarlyStopping
    start_epoch: int
    focal_since: int  # the epoch --switch-to-focal-on-plateau switched at (None: not yet)
    lock: object  # the run folder's lock (utils.lock_run), held as long as the run is

    @property
    def eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, epoch, row):
        """What best.pt and last.pt hold: weights and plain settings only (read with weights_only=True)."""
        args = self.args
        return {"epoch": epoch, "args": vars(args), "classes": self.classes,
                "inference": inference_section(args, self.mean, self.std),
                "class_counts": self.counts.tolist(), "metrics": row, "model": self.model.state_dict(),
                "hard_weights": None if self.hard_weights is None else self.hard_weights.tolist(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "best_score": self.stopper.best,
                "bad_epochs": self.stopper.bad_epochs, "focal_since": self.focal_since}


# ---------------------------------------------------------------- the run's settings

class Settings(argparse.Namespace):
    """A run's settings, read-only once resolve_settings has made them: attribute reads and vars() work as
    on argparse's namespace, and no line after the resolver can change what a setting holds."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __setattr__(self, key, value):
        raise AttributeError(f"a run's settings are fixed once resolved: {key} cannot change")


WHERE_IT_RUNS = ("workers", "device", "trust_checkpoint")  # --resume takes these from the command line
INIT_KEEPS = ("arch", "attention", "drop", "width", "img_size", "upscale",
              "vflip")  # --init: its model and input


def model_kind(arch):
    return "scratch" if arch in SCRATCH_ARCHS else "backbone"


def resolve_settings(args, device=None, data_dir=None, train=None, init=None, resumed=None):
    """The one place where a run's settings are made, in this order: the command line (args), or for
    --resume the run's own settings but where it runs now (WHERE_IT_RUNS); the model and input of the
    --init run (INIT_KEEPS, its checkpoint's inference section); the model kind's DEFAULTS; what the
    training images derive (derive_defaults); the loader workers for the device. Returns the settings,
    frozen, and {setting: where its value came from} for every one the command line left out."""
    if resumed:  # a run saved before an option existed takes that option's default
        values = {**vars(parse_args([])), **resumed["args"],
                  **{key: getattr(args, key) for key in WHERE_IT_RUNS}}
        values["progressive"] = values["progressive"] or 0  # None before it was derived: it was off
    else:
        values = dict(vars(args))
    sources = {}

    def fill(key, value, why):
        if values.get(key) is None:
            values[key], sources[key] = value, why

    if init is not None:  # fine-tuning keeps the run's model and input size
        values.update({key: init[key] for key in INIT_KEEPS})
        sources.update(dict.fromkeys(INIT_KEEPS, f"--init {args.init}"))
        fill("progressive", 0, f"--init {args.init}: fine-tuning, at the size it was trained for")
    fill("arch", "efficientnet_lite0" if values["pretrained"] else "poolcnn",
         "--pretrained" if values["pretrained"] else "default")
    kind = model_kind(values["arch"])
    for key, value in DEFAULTS[kind].items():
        fill(key, value, f"{kind} default")
    if data_dir is not None:
        values["data"] = str(data_dir)  # config.json names the folder actually used
    for key, (value, why) in (derive_defaults(values, train) if train is not None else {}).items():
        fill(key, value, why)
    if device is not None:
        fill("workers", loader_workers(None, device, values["arch"]), f"on {device.type}")
    if values["progressive"] and values["img_size"] and values["progressive"] >= values["img_size"]:
        raise UserError(f"--progressive {values['progressive']} must be below the input size "
                        f"({values['img_size']} px): it is where training starts, growing to it")
    return Settings(**values), sources


def derive_defaults(values, train):
    """{setting: (value, why)}: the input size, test size, batch size, epochs and progressive resizing
    that values leave out, from the model kind, the training images and the augmentation
    (augment.input_size, augment.test_size, BUDGET)."""
    kind = model_kind(values["arch"])
    budget, derived = BUDGET[kind], {}
    img_size, batch_size = values["img_size"], values["batch_size"]
    if img_size is None:
        short_side = float(np.median(train.sizes.min(1)))
        img_size = input_size(short_side, pretrained=kind == "backbone")
        derived["img_size"] = img_size, f"median short side {short_side:.0f} px"
    if batch_size is None:
        batch_size = 16 if len(train.paths) < SMALL_DATASET else 32
        derived["batch_size"] = batch_size, f"{len(train.paths)} training images"
    if values["test_size"] is None:
        size = test_size(img_size, values["aug"])
        derived["test_size"] = size, ("the input size" if size == img_size
                                      else "10% over the input size: --aug heavy's crops")
    if values["epochs"] is None:
        steps_per_epoch = max(1, len(train.paths) // batch_size)
        epochs = round(budget["epochs"] * budget["size"] / img_size)
        derived["epochs"] = (min(3 * epochs, max(epochs, math.ceil(budget["min_steps"] / steps_per_epoch))),
                             f"{budget['epochs']} at {budget['size']} px scaled to {img_size} px, at least "
                             f"{budget['min_steps']} steps of {steps_per_epoch}")
    if values["progressive"] is None:
        start = int(8 * round(budget["progressive"] * img_size / 8))
        start = start if start < img_size else 0  # at 16 px there is nothing smaller to start from
        derived["progressive"] = start, (f"{budget['progressive']:.0%} of the input size" if start
                                         else f"{kind} default: off")
    return derived


def inference_section(settings, mean, std):
    """The checkpoint's `inference` section: what predict.py, ensemble.py and --init need to rebuild and
    feed the model, in names of their own, apart from train.py's options (models.inference_settings)."""
    return {"arch": settings.arch, "attention": settings.attention, "width": settings.width,
            "drop": settings.drop, "img_size": settings.img_size, "test_size": settings.test_size,
            "upscale": settings.upscale, "mean": list(mean), "std": list(std), "vflip": settings.vflip,
            "tta_views": [name for name, _ in tta_views(settings.aug, settings.vflip)],
            "data": settings.data}


# ---------------------------------------------------------------- setting up a run

def prepare(args):
    """A run ready for the loop, in three steps: its data and settings (and folder), its model and
    optimizer, and on --resume everything restored from last.pt."""
    device = pick_device(args.device)
    rank, world = init_distributed(device)
    settings, data, run_dir, init, resumed = settle_run(args, device, rank, world)
    run_lock = lock_run(run_dir) if rank == 0 else None
    dtype = amp_dtype(device, settings.amp)
    torch.backends.cudnn.benchmark = True
    if rank == 0:
        print(f"{len(data.classes)} classes; train {len(data.train.paths)} real images (smallest class "
              f"{data.counts.min()}, largest {data.counts.max()}), {len(data.train_paths)} per epoch with "
              f"balancing, synthetic and pseudo-labeled images; val {len(data.val.paths)}; {settings.arch} "
              f"at {settings.img_size} px, batch {settings.batch_size} x {world} process(es) x "
              f"{settings.accum} accumulated, {settings.epochs} epochs; {device}, AMP {dtype or 'off'}, "
              f"{torch.get_num_threads()} threads, {settings.workers} loader workers; run folder {run_dir}")
    keep_head = init is not None and init["classes"] == data.classes
    model, mean, std, net, frozen = build_network(settings, data.classes, init and init["model"],
                                                  keep_head, device, world)
    parts = make_training(settings, data, model, (mean, std), init, resumed, run_dir if rank == 0 else None,
                          device, dtype, world)
    if rank == 0:  # best.pt and last.pt: model, EMA and the optimizer's moments, and room for a new one
        check_writable(run_dir, 6 * 4 * sum(p.numel() for p in model.parameters()) + 2**20)
    progress = restore(resumed, settings, model, parts, run_dir if rank == 0 else None)
    return Run(args=settings, run_dir=run_dir, device=device, dtype=dtype, rank=rank, world=world,
               classes=data.classes, counts=data.counts, model=model, net=net, frozen=frozen, mean=mean,
               std=std, train_targets=data.train_targets, val=data.val, lock=run_lock, **parts, **progress)


def settle_run(args, device, rank, world):
    """(settings, data, run folder, --init's model and checkpoint or None, last.pt's state or None): a new
    run reads its data first, since the data derives settings; a resumed one has all of its own."""
    if args.resume:
        last, resumed = read_last_checkpoint(args)
        settings, _ = resolve_settings(args, device, resumed=resumed)
        seed_everything(settings.seed)
        data = read_data(settings)
        return settings, data, last.parent, load_init(settings, data.classes, rank), resumed
    seed_everything(args.seed)
    data = read_data(args)
    init = load_init(args, data.classes, rank)
    settings, sources = resolve_settings(args, device, data.dir, data.train, init and init["inference"])
    run_dir = from_rank_zero(new_run(settings, sources, data) if rank == 0 else None, world)
    return settings, data, run_dir, init, None


def read_last_checkpoint(args):
    """(path, state) of --resume RUN's last.pt."""
    last = Path(args.resume)
    last = last / "last.pt" if last.is_dir() else last
    state = load_checkpoint(last, ("model", "optimizer", "args", "epoch"), "train.py (a last.pt)",
                            trust=args.trust_checkpoint)
    saved_epochs = state["args"]["epochs"]
    if args.epochs is not None and args.epochs != saved_epochs:  # its schedule was laid out for saved_epochs
        raise UserError(f"--resume continues the run's own {saved_epochs} epochs; for more, fine-tune it: "
                        f"python train.py --init {last.parent} --epochs {args.epochs}")
    print(f"resuming {last.parent} after epoch {state['epoch']}")
    return last, state


@dataclass
class RunData:
    """A run's images: the folder's classes, the split, and what every epoch draws (real images, and
    synthetic, pseudo-labeled and oversampled ones with the pipeline of each)."""
    dir: str
    classes: list
    train: object  # data.Split of the real training images
    val: object
    split_rows: list  # per class: train, held out, share
    folds: dict  # every image's fold under --folds, else None
    train_paths: list
    train_targets: np.ndarray
    pipeline: list
    counts: np.ndarray  # real training images per class: the prior


def read_data(settings):
    """Read the folder, split it (split_for) and list what the training epochs draw (balance.py)."""
    data_dir = resolve_data_dir(settings.data)
    ds = read_dataset(data_dir)
    classes = ds["classes"]
    train, val, split_rows, folds = split_for(settings, ds)
    train_paths, train_targets, pipeline = training_images(train, classes, BalanceOptions.from_args(settings),
                                                           ds["test"])
    counts = class_counts([classes.index(c) for c in train.labels], len(classes))
    return RunData(str(data_dir), classes, train, val, split_rows, folds, train_paths, train_targets,
                   pipeline, counts)


def load_init(settings, classes, rank):
    """--init RUN's checkpoint with its best model under "model" (models.load_run), or None."""
    if not settings.init:
        return None
    model, ckpt = load_run(run_folder(settings.init, "--init"), trust=settings.trust_checkpoint)
    if ckpt["classes"] != classes and rank == 0:
        print(f"--init {settings.init} was trained on other classes ({', '.join(ckpt['classes'])}): its "
              "weights without its head, and a new head for these classes")
    return {**ckpt, "model": model}


def split_for(settings, ds):
    """(train, val, per-class rows, folds): fold --fold of --folds, else val/ or a hold-out of train/."""
    split_seed = settings.seed if settings.split_seed is None else settings.split_seed
    if settings.folds:
        train, val, rows, part = fold_split(ds["train"], settings.folds, settings.fold, settings.block,
                                            split_seed)
        folds = {"file": [str(p) for p in ds["train"].paths], "label": ds["train"].labels,
                 "fold": part.tolist()}
    else:
        (train, val, rows), folds = train_val_split(ds, settings.val_fraction, settings.block,
                                                    split_seed), None
    return take_fraction(train, settings.train_fraction, split_seed), val, rows, folds


def new_run(settings, sources, data):
    """A new run folder, with config.json (every setting, and where each one not given came from), the
    split table and split.csv (every image and its part); a fold's run goes in its parent folder, which
    lists every image's fold in folds.csv."""
    name = settings.name or f"{settings.arch}-{settings.aug}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = (new_run_dir(f"{name}/fold-{settings.fold}", numbered=False) if settings.folds
               else new_run_dir(name))
    if settings.folds:
        write_csv(run_dir.parent / "folds.csv",
                  [dict(zip(data.folds, row)) for row in zip(*data.folds.values())])
    write_json(run_dir / "config.json", {"args": vars(settings), "derived": sources,
                                         "environment": environment()})
    write_csv(run_dir / "split.csv", split_listing(data))
    print_split(data.split_rows, run_dir)
    print("settings not given: " + "; ".join(f"{key} {getattr(settings, key)} ({why})"
                                             for key, why in sources.items()))
    return run_dir


def split_listing(data):
    """split.csv's rows: every training, validation, synthetic and pseudo-labeled image with its label."""
    rows = [{"split": part, "label": label, "file": path}
            for part, split in (("train", data.train), ("val", data.val))
            for path, label in zip(split.paths, split.labels)]
    return rows + [{"split": name, "label": data.classes[target], "file": path}
                   for path, target, name in zip(data.train_paths, data.train_targets, data.pipeline)
                   if name in ("synthetic", "pseudo")]


def build_network(settings, classes, init_model, keep_head, device, world):
    """(model, mean, std, net, frozen): the model on the device, what runs its forward passes (wrapped in
    DistributedDataParallel under torchrun, compiled with --compile), and the modules --freeze-stages
    keeps as they are (frozen before DistributedDataParallel sees which parameters train)."""
    model, mean, std = build_model(settings.arch, len(classes), settings.pretrained and init_model is None,
                                   settings.attention, settings.drop, settings.width,
                                   None if init_model is not None else settings.weights)
    if init_model is not None:  # a run of other classes (another dataset) gives all but its head
        model.load_state_dict({k: v for k, v in init_model.state_dict().items()
                               if keep_head or not k.startswith("head.")}, strict=keep_head)
    if settings.sync_bn:
        if world == 1 or device.type != "cuda":
            raise UserError("--sync-bn needs torchrun with GPUs (BatchNorm statistics across processes)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last)
    frozen = early_stages(model, settings.arch, settings.freeze_stages) if settings.freeze_stages else []
    for module in frozen:
        module.requires_grad_(False)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if settings.compile:
        net = torch.compile(net)
    return model, mean, std, net, frozen


def make_training(settings, data, model, mean_std, init, resumed, run_dir, device, dtype, world):
    """The loaders (images decoded once into a cache), the hard examples' weights (--hard-fraction), the
    optimizer and its per-step schedule, the AMP scaler, the EMA, mixing and the loss's class weights."""
    augs = {"train": settings.aug, "heavy": "heavy", "synthetic": settings.synthetic_aug,
            "pseudo": settings.aug}
    pipelines = {name: build_transform(aug, settings.img_size, settings.upscale, settings.vflip)
                 for name, aug in augs.items()}
    eval_transform = build_transform("none", settings.img_size, settings.upscale)
    train_set = ImageDataset(data.train_paths, data.train_targets, pipelines, pipeline=data.pipeline)
    val_set = ImageDataset(data.val.paths, [data.classes.index(c) for c in data.val.labels], eval_transform)
    for dataset, used in ((train_set, {augs[name] for name in data.pipeline}), (val_set, {"none"})):
        dataset.fill_cache(cache_form(used,
                                      settings.img_size, settings.upscale))  # decode once, not every epoch
    hard_weights = None
    if settings.hard_fraction:
        if init is None:
            raise UserError("--hard-fraction needs --init RUN: "
                            "the model whose mistakes define the hard examples")
        hard_weights = np.asarray(resumed["hard_weights"]) if resumed is not None else find_hard_examples(
            model, train_set, data.classes, run_dir, BalanceOptions.from_args(settings),
            (settings.batch_size * 2, settings.workers, device, dtype, *mean_std), eval_transform)
    per_process = len(make_sampler(data.train_targets, settings.balance, 0, hard_weights)
                      or train_set) // world
    batches = per_process // settings.batch_size if per_process > settings.batch_size else 1
    optimizer, scheduler = make_optimizer(settings, model, max(1, batches // settings.accum))
    train_order = EpochOrder()
    mix = {"none": None, "mixup": v2.MixUp, "cutmix": v2.CutMix}[settings.mix]
    class_weights = loss_weights(settings.balance, data.counts, settings.cb_beta)
    if class_weights is not None and run_dir is not None:
        print("class weights in the loss: " + ", ".join(f"{c} {w:.2f}"
                                                        for c, w in zip(data.classes, class_weights)))
    return dict(
        train_set=train_set, train_order=train_order, hard_weights=hard_weights, optimizer=optimizer,
        scheduler=scheduler,
        train_loader=make_loader(train_set, settings.batch_size, settings.workers, device, train_order,
                                 drop_last=per_process > settings.batch_size),
        val_loader=make_loader(val_set, settings.batch_size * 2, settings.workers, device),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        ema=AveragedModel(model, multi_avg_fn=ema_update(settings.ema), use_buffers=True)
            if settings.ema else None,
        mix=mix(alpha=settings.mix_alpha, num_classes=len(data.classes)) if mix else None,
        class_weights=class_weights.to(device) if class_weights is not None else None)


def make_optimizer(settings, model, steps_per_epoch):
    """AdamW or SGD (Nesterov), and the per-step schedule: linear warmup into --schedule (OneCycle)."""
    if settings.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, nesterov=True,
                                    weight_decay=settings.weight_decay)
    schedule = LRSchedule(settings.schedule, round(settings.warmup_epochs * steps_per_epoch),
                          settings.epochs * steps_per_epoch, settings.plateau_patience)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def restore(resumed, settings, model, parts, run_dir):
    """The loop's starting point: epoch 1 and a fresh early-stopping record, or on --resume the weights,
    optimizer, schedule, scaler and EMA of last.pt and the epoch after it (log.csv repaired to match)."""
    if resumed is None:
        return dict(stopper=EarlyStopping(settings.monitor, settings.patience),
                    start_epoch=1, focal_since=None)
    model.load_state_dict(resumed["model"])
    for key in ("optimizer", "scheduler", "scaler") + (("ema",) if parts["ema"] is not None else ()):
        parts[key].load_state_dict(resumed[key])
    stopper = EarlyStopping(settings.monitor, settings.patience, resumed["best_score"], resumed["bad_epochs"])
    if run_dir is not None:
        repair_log(run_dir / "log.csv", resumed["metrics"])
    return dict(stopper=stopper, start_epoch=settings.epochs + 1 if stopper.stop else resumed["epoch"] + 1,
                focal_since=resumed["focal_since"])  # it may have stopped early


def repair_log(log_path, last_row):
    """Make log.csv end at the checkpoint's epoch: rows written after it (a crash between the row and the
    next checkpoint) go, and the checkpoint's own row comes back if the crash came before it was logged."""
    rows = [r for r in read_csv(log_path) if int(r["epoch"]) < last_row["epoch"]] if log_path.exists() else []
    log_path.unlink(missing_ok=True)
    for row in rows + [last_row]:
        append_csv(log_path, row)
    for stale in log_path.parent.glob("*.tmp"):  # a checkpoint write the crash cut short
        stale.unlink()


# ---------------------------------------------------------------- k-fold cross-validation

def runs_to_train(args):
    """[args] for one run; for --folds K, one copy per fold (only --fold I's when given), all under
    runs/NAME/fold-I so that folds trained on different machines land in one parent folder."""
    if not args.folds:
        return [args]
    if args.resume:
        raise UserError("--resume takes one fold's folder (runs/NAME/fold-I), without --folds")
    if args.folds < 2 or (args.fold is not None and not 0 <= args.fold < args.folds):
        raise UserError(f"--folds must be 2 or more and --fold in 0..{args.folds - 1}: "
                        f"got {args.folds}, {args.fold}")
    arch = resolve_settings(args)[0].arch  # the folds' parent folder: one name for all of them
    name = args.name or f"{arch}-{args.aug}-{args.folds}fold-{time.strftime('%Y%m%d-%H%M%S')}"
    folds = [args.fold] if args.fold is not None else range(args.folds)
    return [argparse.Namespace(**{**vars(args), "name": name, "fold": fold}) for fold in folds]


def finish_fold(run):
    """The fold's out-of-fold predictions (its best model on its held-out fold), then, once every fold
    of the parent folder has them, the parent's oof_predictions.csv and cv.json (the CV score)."""
    model, _ = load_run(run.run_dir, run.device)
    _, probs = evaluate(run, model)
    write_csv(run.run_dir / "oof.csv", [{"file": path, "label": label, "fold": run.args.fold,
                                         **dict(zip(run.classes, p))}
                                        for path, label, p in zip(run.val.paths, run.val.labels,
                                                                  probs.tolist())])
    parent = run.run_dir.parent
    done = [parent / f"fold-{k}" / "oof.csv" for k in range(run.args.folds)]
    if not all(path.exists() for path in done):
        print(f"out-of-fold predictions of fold {run.args.fold} written; {sum(p.exists() for p in done)} of "
              f"{run.args.folds} folds done")
        return parent
    rows = [row for path in done for row in read_csv(path)]
    write_csv(parent / "oof_predictions.csv", rows)
    labels = np.array([run.classes.index(r["label"]) for r in rows])
    preds = np.array([[float(r[c]) for c in run.classes] for r in rows]).argmax(1)
    per_fold = [float((preds[folds] == labels[folds]).mean()) for folds in
                (np.array([int(r["fold"]) == k for r in rows]) for k in range(run.args.folds))]
    cv = {"folds": run.args.folds, "images": len(rows), "oof_acc": float((preds == labels).mean()),
          "oof_macro_f1": float(f1_score(labels, preds, average="macro")), "fold_acc": per_fold,
          "best_epochs": [int(load_checkpoint(parent / f"fold-{k}" / "best.pt")["epoch"])
                          for k in range(run.args.folds)]}
    write_json(parent / "cv.json", cv)
    print(f"cross-validation over {cv['folds']} folds: out-of-fold accuracy {cv['oof_acc']:.4f}, macro-F1 "
          f"{cv['oof_macro_f1']:.4f} ({len(rows)} images); {parent}/oof_predictions.csv")
    return parent


if __name__ == "__main__":
    run_cli(main, "interrupted before the first epoch: nothing to resume")
