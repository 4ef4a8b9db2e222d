"""Class balancing and hard examples: which training images to draw, how much each class weighs.

train.py's --balance picks one method (each is a standard answer to a long-tailed training set):
    sampler       WeightedRandomSampler: every class drawn equally often, with replacement
    weights       loss weights by inverse class frequency
    effective     loss weights by the "effective number" of images (Cui et al. 2019):
                  w_c = (1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes
    oversample    minority images repeated until every class matches the largest (a fixed list)
    undersample   every epoch a fresh random subset of the smallest class's size from each class
    synthetic     generated images (--synthetic DIR) top up every class to the largest
Focal loss (--loss focal) and post-hoc logit adjustment (predict.py --logit-adjust) complete the set.

Hard examples (train.py --init RUN --hard-fraction F): the highest-loss training images under
RUN's model are drawn --hard-factor times as often while fine-tuning.
"""
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from augment import model_input
from data import ImageDataset, make_loader, read_folder
from utils import UserError, append_csv, read_csv


def class_counts(targets, num_classes):
    return np.bincount(np.asarray(targets, dtype=int), minlength=num_classes)


def inverse_frequency_weights(counts):
    """n / (K n_c): an average image weighs 1."""
    counts = np.asarray(counts, dtype=float)
    return counts.sum() / (len(counts) * np.maximum(counts, 1))


def effective_number_weights(counts, beta=0.999):
    """Cui et al. 2019: (1 - beta) / (1 - beta^n_c), normalised to sum to K."""
    counts = np.asarray(counts, dtype=float)
    weights = (1 - beta) / (1 - beta ** np.maximum(counts, 1))
    return weights * len(counts) / weights.sum()


def loss_weights(method, counts, beta):
    """The class weights for the loss, or None when the method balances by drawing images."""
    if method == "weights":
        return torch.tensor(inverse_frequency_weights(counts), dtype=torch.float32)
    if method == "effective":
        return torch.tensor(effective_number_weights(counts, beta), dtype=torch.float32)
    return None


def oversample_indices(targets, seed, classes_to_repeat=None, factor=None):
    """Indices into targets with repeats. Default: every class repeated up to the largest class's
    count (whole copies, then a seeded random remainder). With classes_to_repeat and factor: only
    those classes, `factor` times as many."""
    targets, rng = np.asarray(targets), np.random.default_rng(seed)
    largest = np.bincount(targets).max()
    indices = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        if classes_to_repeat is None:
            wanted = largest
        else:
            wanted = round(len(members) * factor) if c in classes_to_repeat else len(members)
        copies, remainder = divmod(wanted, len(members))
        indices += list(np.tile(members, copies)) + list(rng.choice(members, remainder, replace=False))
    return np.sort(np.array(indices, dtype=int))


def draw_weights(targets, balance, hard_weights=None):
    """Per-image drawing weights for a WeightedRandomSampler, or None for plain shuffling:
    1/n_c for --balance sampler, times the hard-example factor."""
    targets = np.asarray(targets)
    weights = np.ones(len(targets))
    if balance == "sampler":
        weights /= np.bincount(targets)[targets]
    if hard_weights is not None:
        weights *= hard_weights
    return weights if (balance == "sampler" or hard_weights is not None) else None


def make_sampler(targets, balance, seed, hard_weights=None):
    """The epoch's sampler: weighted draws with replacement, a class-balanced undersample, or None."""
    generator = torch.Generator().manual_seed(seed)
    if balance == "undersample":
        targets = np.asarray(targets)
        smallest = np.bincount(targets)[np.unique(targets)].min()
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.choice(np.flatnonzero(targets == c), smallest, replace=False)
                               for c in np.unique(targets)])
        return torch.utils.data.SubsetRandomSampler(keep.tolist(), generator=generator)
    weights = draw_weights(targets, balance, hard_weights)
    if weights is None:
        return None
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(targets),
                                                  replacement=True, generator=generator)


def hard_example_weights(losses, fraction, factor):
    """factor for the `fraction` of images with the highest loss, 1 for the rest."""
    losses = np.asarray(losses)
    hardest = np.argsort(-losses)[:max(1, round(fraction * len(losses)))]
    weights = np.ones(len(losses))
    weights[hardest] = factor
    return weights, hardest


def logit_adjustment(class_counts, tau):
    """Post-hoc logit adjustment (Menon et al. 2021): subtract tau * log(prior) from the logits, so a
    model that learned the training prior predicts for a balanced test set. A uniform prior shifts
    every logit equally and changes nothing."""
    prior = torch.as_tensor(class_counts, dtype=torch.float32)
    return tau * torch.log(prior.clamp(min=1) / prior.sum())


# ---------------------------------------------------------------- the training set

def class_list(text, classes, flag):
    names = [c for c in text.split(",") if c]
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise UserError(f"{flag}: unknown classes {unknown}; the classes are {', '.join(classes)}")
    return names


@dataclass
class BalanceOptions:
    """The settings balance.py acts on (train.py's options of the same names)."""
    balance: str = "none"
    cb_beta: float = 0.999
    heavy_classes: str = ""
    oversample_classes: str = ""
    oversample_factor: float = 2.0
    synthetic: str = None
    synthetic_ratio: float = 0.5
    synthetic_only: bool = False
    hard_fraction: float = 0.0
    hard_factor: float = 4.0
    pseudo: str = None
    pseudo_threshold: float = 0.99
    seed: int = 0

    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def synthetic_images(args, classes, real_counts):
    """(paths, targets) from --synthetic DIR/<class>/: --synthetic-ratio of each class's real
    count, enough to top every class up to the largest (--balance synthetic), or all of them
    (--synthetic-only). Classes without a folder in DIR get none."""
    if not args.synthetic:
        if args.balance == "synthetic" or args.synthetic_only:
            raise UserError("--balance synthetic and --synthetic-only need --synthetic DIR "
                            "(python gan.py sample)")
        return [], []
    if not Path(args.synthetic).is_dir():
        raise UserError(f"--synthetic {args.synthetic}: folder not found "
                        "(python gan.py sample --out DIR writes one)")
    found = read_folder(args.synthetic)
    if found.labels is None:
        raise UserError(f"--synthetic {args.synthetic}: expected class folders DIR/<class>/ "
                        "as gan.py sample writes")
    class_list(",".join(sorted(set(found.labels))), classes, "--synthetic")
    labels, rng = np.asarray(found.labels), np.random.default_rng(args.seed)
    paths, targets = [], []
    for c, name in enumerate(classes):
        available = np.flatnonzero(labels == name)
        if args.synthetic_only:
            wanted = len(available)
        elif args.balance == "synthetic":
            wanted = real_counts.max() - real_counts[c]
        else:
            wanted = round(args.synthetic_ratio * real_counts[c])
        if len(available) and wanted > len(available):
            print(f"warning: {name}: {wanted} synthetic images wanted, {args.synthetic} has {len(available)}")
        chosen = sorted(rng.choice(available, min(wanted, len(available)), replace=False))
        paths += [found.paths[i] for i in chosen]
        targets += [c] * len(chosen)
    return paths, targets


def pseudo_labeled_images(args, classes, test):
    """(paths, targets) of the test images that --pseudo (a test_predictions.csv of predict.py or
    ensemble.py) predicts with a confidence of at least --pseudo-threshold, as that class."""
    if test is None:
        raise UserError("--pseudo: the data has no test/ folder to take pseudo-labels from")
    path = Path(args.pseudo)
    path = path / "test_predictions.csv" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--pseudo: {path} not found (python predict.py writes test_predictions.csv)")
    by_id = dict(zip(test.ids, test.paths))
    rows = [r for r in read_csv(path) if float(r["confidence"]) >= args.pseudo_threshold and r["id"] in by_id]
    class_list(",".join(sorted({r["label"] for r in rows})), classes, "--pseudo")
    print(f"pseudo-labels: {len(rows)} of {len(test.paths)} test images "
          f"at confidence >= {args.pseudo_threshold}")
    return [by_id[r["id"]] for r in rows], [classes.index(r["label"]) for r in rows]


def training_images(train, classes, args, test=None):
    """The training set as (paths, targets, pipeline): real images, repeated by --balance
    oversample or --oversample-classes, plus synthetic ones and pseudo-labeled test images.
    `args` is a BalanceOptions. Each image's pipeline is named: "train" (--aug), "heavy"
    (--heavy-classes), "synthetic" (--synthetic-aug) or "pseudo" (--aug, listed apart)."""
    targets = np.array([classes.index(c) for c in train.labels])
    if args.balance == "oversample":
        keep = oversample_indices(targets, args.seed)
    elif args.oversample_classes:
        repeat = {classes.index(c)
                  for c in class_list(args.oversample_classes, classes, "--oversample-classes")}
        keep = oversample_indices(targets, args.seed, repeat, args.oversample_factor)
    else:
        keep = np.arange(len(targets))
    if args.synthetic_only:
        keep = keep[:0]
    heavy = {classes.index(c) for c in class_list(args.heavy_classes, classes, "--heavy-classes")}
    paths = [train.paths[i] for i in keep]
    pipeline = ["heavy" if targets[i] in heavy else "train" for i in keep]
    synthetic_paths, synthetic_targets = synthetic_images(args, classes, class_counts(targets, len(classes)))
    if args.synthetic_only and not synthetic_paths:
        raise UserError(f"--synthetic-only: no images for these classes in {args.synthetic}")
    pseudo_paths, pseudo_targets = pseudo_labeled_images(args, classes, test) if args.pseudo else ([], [])
    return (paths + synthetic_paths + pseudo_paths,
            np.concatenate([targets[keep], synthetic_targets, pseudo_targets]).astype(int),
            pipeline + ["synthetic"] * len(synthetic_paths) + ["pseudo"] * len(pseudo_paths))


@torch.no_grad()
def image_losses(model, dataset, batch_size, workers, device, dtype, mean, std):
    """Cross-entropy of every image of a dataset (in order) under a model whose input is normalised with
    mean and std."""
    model.eval()
    losses = []
    for images, targets in tqdm(make_loader(dataset, batch_size, workers, device), desc="losses", leave=False,
                                disable=None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(model_input(images, device, mean, std)).float()
        losses.append(F.cross_entropy(logits, targets.to(device), reduction="none").cpu())
    return torch.cat(losses).numpy()


def find_hard_examples(model, train_set, classes, run_dir, args, loader_args, eval_transform):
    """Drawing weights that favour the --hard-fraction of training images with the highest loss,
    listed in hard_examples.csv. `args` is a BalanceOptions; loader_args (batch size, workers,
    device, dtype, mean, std) as image_losses takes them."""
    plain = ImageDataset(train_set.paths, train_set.targets, eval_transform)
    losses = image_losses(model, plain, *loader_args)
    weights, hardest = hard_example_weights(losses, args.hard_fraction, args.hard_factor)
    for rank, i in enumerate(hardest, 1) if run_dir is not None else ():  # None: another process writes it
        append_csv(run_dir / "hard_examples.csv", {"rank": rank, "file": train_set.paths[i],
                                                   "label": classes[train_set.targets[i]], "loss": losses[i]})
    print(f"hard examples: the {len(hardest)} highest-loss of {len(losses)} training images (loss >= "
          f"{losses[hardest[-1]]:.3f}) are drawn {args.hard_factor:g}x as often; listed in hard_examples.csv")
    return weights
