"""Reading competition folders, looking at the data, and splitting it without leaks.

Layouts read (DIR is what you pass as --data):
    DIR/train/<class>/*.jpg               image folders, one per class
    DIR/train/*.jpg + DIR/train.csv       a flat folder and a CSV of id,label
    DIR/val/<class>/, DIR/test/<class>/   optional labeled splits (what `data.py split` writes)
    DIR/test/*.jpg                        optional unlabeled test images; id = file name without extension
    DIR/sample_submission.csv             optional: its id column and row order define the submission
    DIR/solution.csv                      optional: id,label[,Usage] to score test predictions

With no --data and no ./data folder the scripts build a built-in set (scikit-learn's 8x8 digit scans,
10 classes, written as PNGs) and say so.

Usage:
    python data.py eda --data ../shared/data/vehicles6          # writes reports/eda/
    python data.py split --data ../shared/data/vehicles6 --out data/vehicles6-split --val 0.15 --test 0.15
"""
import argparse
import hashlib
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from utils import UserError, append_csv, read_csv, run_cli

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_data" / "digits"
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NEAR_DUPLICATE_BITS = 2  # difference hashes this close (of 64 bits) are the same picture, resized or re-encoded
MIN_HASH_SIDE = 32  # smaller images have too few pixels for the hash to tell pictures apart


# ---------------------------------------------------------------- images

def load_rgb(path):
    """Any image file as an RGB uint8 array: EXIF rotation applied, alpha flattened on white,
    16-bit, CMYK, palette and grayscale converted."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: scale the used range to 8 bits instead of clipping at 255
            a = np.asarray(im, dtype=np.float64)
            a = 255 * (a - a.min()) / max(a.max() - a.min(), 1)
            im = Image.fromarray(a.astype(np.uint8))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(im.convert("RGB"))


def image_fingerprint(path):
    """(width, height, 64-bit difference hash) of an image; raises on unreadable files.

    JPEGs are decoded at reduced scale (draft), which still reads the whole file, so truncated
    files are caught here cheaply rather than mid-training.
    """
    with Image.open(path) as im:
        size = im.size
        im.draft("L", (64, 64))
        im = ImageOps.exif_transpose(im).convert("L").resize((9, 8), Image.BILINEAR)
        a = np.asarray(im, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return size[0], size[1], int(np.packbits(bits).view(">u8")[0])


def scan_images(paths):
    """Check every file; warn about and drop the unreadable ones.

    Returns (kept indices, sizes as an (n, 2) array, difference hashes as uint64).
    """
    kept, sizes, hashes = [], [], []
    for i, p in enumerate(paths):
        try:
            w, h, hsh = image_fingerprint(p)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            warnings.warn(f"skipping unreadable image {p}: {e}", stacklevel=2)
            continue
        kept.append(i)
        sizes.append((w, h))
        hashes.append(hsh)
    return kept, np.array(sizes, dtype=np.int64).reshape(-1, 2), np.array(hashes, dtype=np.uint64)


def near_duplicate_pairs(split_a, split_b=None, max_bits=NEAR_DUPLICATE_BITS):
    """Index pairs (i, j) of images whose hashes differ in at most max_bits bits; i < j within one split.
    Images under MIN_HASH_SIDE pixels are left out."""
    same = split_b is None
    split_b = split_a if same else split_b
    usable_b = split_b.sizes.min(1) >= MIN_HASH_SIDE
    pairs = []
    for start in range(0, len(split_a.paths), 1024):  # blocks of rows keep memory flat on big sets
        block = split_a.hashes[start:start + 1024, None] ^ split_b.hashes[None, :]
        close = (np.bitwise_count(block) <= max_bits) & usable_b[None, :]
        close &= (split_a.sizes[start:start + 1024].min(1) >= MIN_HASH_SIDE)[:, None]
        ii, jj = np.nonzero(close)
        ii += start
        keep = ii < jj if same else slice(None)
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


# ---------------------------------------------------------------- folders

@dataclass
class Split:
    """Image files and, for labeled splits, their class names. ids are file names without extension."""
    paths: list
    labels: list = None
    hashes: np.ndarray = field(default=None, repr=False)
    sizes: np.ndarray = field(default=None, repr=False)

    @property
    def ids(self):
        return [Path(p).stem for p in self.paths]

    def subset(self, idx):
        take = lambda seq: None if seq is None else [seq[i] for i in idx]
        sub = lambda arr: None if arr is None else arr[np.asarray(idx, dtype=int)]
        return Split(take(self.paths), take(self.labels), sub(self.hashes), sub(self.sizes))


def list_images(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_folder(folder, labels_csv=None):
    """A split folder: class subfolders (labeled), flat + CSV (labeled) or flat (unlabeled)."""
    folder = Path(folder)
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_dirs:
        paths, labels = [], []
        for d in class_dirs:
            files = list_images(d)
            if not files:
                raise UserError(f"class folder {d} has no images: remove it or add images")
            paths += files
            labels += [d.name] * len(files)
        split = Split(paths, labels)
    elif labels_csv is not None and Path(labels_csv).is_file():
        split = read_labels_csv(folder, labels_csv)
    else:
        split = Split(list_images(folder))
    if not split.paths:
        raise UserError(f"no images in {folder}")
    kept, split.sizes, split.hashes = scan_images(split.paths)
    split.paths = [split.paths[i] for i in kept]
    split.labels = None if split.labels is None else [split.labels[i] for i in kept]
    if not split.paths:
        raise UserError(f"no readable images in {folder}")
    return split


def read_labels_csv(folder, csv_path):
    """train.csv with an id column (first column) and a label column (named label/class, else second)."""
    rows = read_csv(csv_path)
    if not rows or len(rows[0]) < 2:
        raise UserError(f"{csv_path} needs at least two columns: id,label")
    columns = list(rows[0])
    label_col = next((c for c in columns if c.lower() in ("label", "class", "target", "category")), columns[1])
    by_stem = {p.stem: p for p in list_images(folder)}
    by_name = {p.name: p for p in by_stem.values()}
    paths, labels, missing = [], [], []
    for row in rows:
        key = row[columns[0]]
        path = by_name.get(key) or by_stem.get(key)
        if path is None:
            missing.append(key)
            continue
        paths.append(path)
        labels.append(row[label_col])
    if missing:
        warnings.warn(f"{len(missing)} ids in {csv_path} have no image in {folder} (first: {missing[0]}); skipped")
    return Split(paths, labels)


def resolve_data_dir(arg):
    """--data if given, else ./data, else the built-in digits set (built on first use)."""
    if arg:
        path = Path(arg)
        if not path.is_dir():
            raise UserError(f"data folder not found: {path}")
        return path
    if Path("data").is_dir():
        print("using ./data (pass --data DIR for another folder)")
        return Path("data")
    if not (BUILTIN_DIR / "train").is_dir():
        build_builtin_dataset(BUILTIN_DIR)
    print(f"no --data and no ./data folder: using the built-in digits set in {BUILTIN_DIR}")
    return BUILTIN_DIR


def read_dataset(data_dir):
    """Everything in a competition folder: train/val/test splits, class names and the CSVs."""
    data_dir = Path(data_dir)
    if not (data_dir / "train").is_dir():
        raise UserError(f"{data_dir} has no train/ folder (expected train/<class>/*.jpg or train/ + train.csv)")
    ds = {"dir": data_dir, "train": read_folder(data_dir / "train", data_dir / "train.csv")}
    if ds["train"].labels is None:
        raise UserError(f"{data_dir}/train has no labels: use class subfolders or a train.csv (id,label)")
    ds["classes"] = sorted(set(ds["train"].labels))
    if len(ds["classes"]) < 2:
        raise UserError(f"{data_dir}/train has {len(ds['classes'])} class; classification needs at least 2")
    for name in ("val", "test"):
        folder = data_dir / name
        ds[name] = read_folder(folder, data_dir / f"{name}.csv") if folder.is_dir() else None
        unknown = set(ds[name].labels or []) - set(ds["classes"]) if ds[name] else set()
        if unknown:
            raise UserError(f"{folder} has classes not in train/: {sorted(unknown)}")
    for name in ("sample_submission", "solution"):
        path = data_dir / f"{name}.csv"
        ds[name] = path if path.is_file() else None
    return ds


def build_builtin_dataset(root):
    """scikit-learn's digits (1797 real 8x8 scans, 10 classes) as a small competition folder:
    train/<class>/, an unlabeled test/ (30%), sample_submission.csv and solution.csv."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    is_test = rng.random(len(digits.target)) < 0.3
    root = Path(root)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    submission, solution = [], []
    for i, (img, target) in enumerate(zip(digits.images, digits.target)):
        gray = (255 - img * 255 / 16).astype(np.uint8)  # dark ink on white paper, as scanned
        name = DIGIT_NAMES[target]
        folder = tmp / "test" if is_test[i] else tmp / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray).convert("RGB").save(folder / f"{i:04d}.png")
        if is_test[i]:
            submission.append(f"{i:04d},zero")
            solution.append(f"{i:04d},{name},{'Public' if rng.random() < 0.5 else 'Private'}")
    (tmp / "sample_submission.csv").write_text("id,label\n" + "\n".join(submission) + "\n")
    (tmp / "solution.csv").write_text("id,label,Usage\n" + "\n".join(solution) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"built the built-in digits set in {root}")


# ---------------------------------------------------------------- PyTorch datasets

class ImageDataset(torch.utils.data.Dataset):
    """Images through an albumentations transform; targets are class indices (-1 when unlabeled).
    `transform` may be a list of pipelines, with `pipeline[i]` choosing image i's (per-class
    augmentation, synthetic images). With `views` (test-time augmentation), an item is the stack
    of every view, each transformed."""

    def __init__(self, paths, targets, transform, views=None, pipeline=None):
        self.paths, self.targets, self.views = list(paths), list(targets), views
        self.transforms = list(transform) if isinstance(transform, (list, tuple)) else [transform]
        self.pipeline = list(pipeline) if pipeline is not None else [0] * len(self.paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image, transform = load_rgb(self.paths[i]), self.transforms[self.pipeline[i]]
        if self.views is None:
            return transform(image=image)["image"], self.targets[i]
        stack = [transform(image=np.ascontiguousarray(view(image)))["image"] for view in self.views]
        return torch.stack(stack), self.targets[i]

    def reseed(self, seed):
        for k, transform in enumerate(self.transforms):
            reseed(transform, seed + k)


def seed_augmentation(worker_id=None):
    """Give each loader worker its own augmentation stream, drawn from the loader's seed.

    albumentations draws from a generator fixed when the pipeline is built, so without this every
    worker (a copy of the dataset) would repeat the same "random" augmentations.
    """
    torch.utils.data.get_worker_info().dataset.reseed(torch.initial_seed() % 2**32)


def reseed(transform, seed):
    """One random stream shared by all ops of an albumentations pipeline.

    (Compose.set_random_seed would give every op its own generator with the same seed, so that
    HorizontalFlip and VerticalFlip, both p=0.5, would always fire together.)
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def make_loader(dataset, batch_size, workers, device, shuffle=False, sampler=None, seed=0):
    """A DataLoader whose order and augmentation depend only on `seed`: workers restart each epoch
    (not persistent) so a loader built with the same seed replays the same epoch after --resume."""
    generator = torch.Generator().manual_seed(seed)
    if workers == 0:
        dataset.reseed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                       sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                                       worker_init_fn=seed_augmentation, generator=generator,
                                       drop_last=shuffle and len(sampler or dataset) > batch_size)


# ---------------------------------------------------------------- leak-free splitting

def duplicate_groups(split, block=25):
    """Group ids such that near-duplicates share a group.

    Two sources: pictures whose difference hashes nearly match, and, when file names end in a
    number, blocks of `block` consecutive numbers within a class, since numbered files are usually
    capture order and neighbouring frames show the same object (0 turns that off).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    n = len(split.paths)
    edges = near_duplicate_pairs(split)
    if block:
        first_in_block = {}
        for i, (path, label) in enumerate(zip(split.paths, split.labels)):
            m = re.search(r"(\d+)$", Path(path).stem)
            if m:
                key = (label, int(m.group(1)) // block)
                edges.append((first_in_block.setdefault(key, i), i))
    rows, cols = zip(*edges) if edges else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def stratified_group_split(labels, groups, fraction, seed):
    """(keep, held-out) index arrays: about `fraction` of each class held out, whole groups at a time."""
    from sklearn.model_selection import StratifiedGroupKFold
    n_splits = max(2, round(1 / fraction))
    if len(set(groups)) < n_splits:
        raise UserError(f"only {len(set(groups))} groups of near-duplicates: too few to hold out {fraction:.0%} by "
                        "group; lower --block (0 turns number blocks off) or provide a val/ folder")
    with warnings.catch_warnings():  # a class with fewer groups than folds is fine for one fold
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        keep, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    return keep, held


def split_dataset(data_dir, out_dir, val, test, seed, block):
    """Write out_dir/{train,val,test}/<class>/ and manifest.csv from data_dir's labeled train set."""
    ds = read_dataset(data_dir)
    train = ds["train"]
    groups = duplicate_groups(train, block)
    parts = {"train": np.arange(len(train.paths))}
    for name, fraction in (("test", test), ("val", val / max(1 - test, 1e-9))):
        if fraction > 0:
            keep, held = stratified_group_split([train.labels[i] for i in parts["train"]],
                                                groups[parts["train"]], fraction, seed)
            parts[name] = parts["train"][held]
            parts["train"] = parts["train"][keep]
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir} exists: choose a new --out so an earlier split is never overwritten")
    for name, idx in parts.items():
        for i in idx:
            dest = out_dir / name / train.labels[i] / Path(train.paths[i]).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(train.paths[i], dest)
            append_csv(out_dir / "manifest.csv", {"split": name, "label": train.labels[i], "group": groups[i],
                                                  "file": str(dest.relative_to(out_dir)), "source": train.paths[i]})
    for name, idx in parts.items():
        print(f"{name}: {len(idx)} images, {len(set(groups[idx]))} duplicate groups")
    print(f"wrote {out_dir} (train with: python train.py --data {out_dir})")


# ---------------------------------------------------------------- EDA

def eda(data_dir, out_dir):
    """Plots and eda.md: class balance, examples, sizes, channel statistics, duplicates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds = read_dataset(data_dir)
    train, classes = ds["train"], ds["classes"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {c: train.labels.count(c) for c in classes}

    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 0.6), 4))
    ax.bar(classes, [counts[c] for c in classes])
    ax.set_title(f"train images per class ({len(train.paths)} in all)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out_dir / "class_balance.png", dpi=100)
    plt.close(fig)

    per_class = 8
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.2, len(classes) * 1.3), squeeze=False)
    rng = np.random.default_rng(0)
    for row, c in enumerate(classes):
        idx = [i for i, label in enumerate(train.labels) if label == c]
        for col, i in enumerate(rng.choice(idx, min(per_class, len(idx)), replace=False)):
            axes[row, col].imshow(load_rgb(train.paths[i]))
        for ax in axes[row]:
            ax.axis("off")
        axes[row, 0].set_title(c, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "examples.png", dpi=100)
    plt.close(fig)

    w, h = train.sizes[:, 0], train.sizes[:, 1]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, values, title in zip(axes, (w, h, w / h), ("width (px)", "height (px)", "aspect ratio w/h")):
        ax.hist(values, bins=30)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_dir / "sizes.png", dpi=100)
    plt.close(fig)

    sample = rng.choice(len(train.paths), min(2000, len(train.paths)), replace=False)
    pixels = np.concatenate([load_rgb(train.paths[i]).reshape(-1, 3) for i in sample]) / 255.0
    mean, std = pixels.mean(0), pixels.std(0)

    md5 = [hashlib.md5(Path(p).read_bytes()).hexdigest() for p in train.paths]
    by_md5 = {}
    for i, digest in enumerate(md5):
        by_md5.setdefault(digest, []).append(i)
    exact = [(same[0], j) for same in by_md5.values() for j in same[1:]]
    near = near_duplicate_pairs(train)
    cross = near_duplicate_pairs(ds["test"], train) if ds["test"] else []
    for kind, pairs, a, b in (("exact", exact, train, train), ("near", near, train, train),
                              ("train-test", cross, ds["test"], train)):
        for i, j in pairs:
            append_csv(out_dir / "duplicates.csv", {"kind": kind, "a": a.paths[i], "b": b.paths[j]})

    ratio = max(counts.values()) / min(counts.values())
    median_side = int(np.median(np.minimum(w, h)))
    scratch_size = max(32, min(256, 32 * round(median_side / 32)))
    lines = [f"# EDA of {ds['dir']}", "",
             f"- train: {len(train.paths)} images in {len(classes)} classes"
             + "".join(f"; {name}: {len(ds[name].paths)} ({'labeled' if ds[name].labels else 'unlabeled'})"
                       for name in ("val", "test") if ds[name]),
             "- images per class: " + ", ".join(f"{c} {counts[c]}" for c in classes),
             f"- imbalance ratio (largest / smallest class): {ratio:.1f}",
             f"- image size: width {w.min()}-{w.max()} (median {int(np.median(w))}), "
             f"height {h.min()}-{h.max()} (median {int(np.median(h))}); aspect ratio {np.median(w / h):.2f} median",
             f"- channel mean (RGB, 0-1): {mean.round(3).tolist()}, std: {std.round(3).tolist()}"
             f" (over {len(sample)} images)",
             f"- exact duplicate pairs in train: {len(exact)}; near-duplicate pairs (hash within "
             f"{NEAR_DUPLICATE_BITS} bits): {len(near)}; test images nearly matching a train image: {len(cross)}"
             " (listed in duplicates.csv)", "", "## Conclusions", ""]
    if ratio >= 3:
        lines.append(f"- Imbalanced (ratio {ratio:.1f}): balance the classes (`--balance sampler` or "
                     "`--balance weights`, or `--loss focal`) and judge by macro-F1, not accuracy alone.")
    else:
        lines.append(f"- Balanced enough (ratio {ratio:.1f}): plain cross-entropy; accuracy is a fair metric.")
    lines.append(f"- Input size: {scratch_size} px for a model trained from scratch (the median short side is "
                 f"{median_side} px); pretrained backbones expect 128-224 px, so small images are upscaled "
                 "(`--img-size`, `--upscale`).")
    if near or exact:
        lines.append("- Near-duplicates exist: validation splits must keep them on one side "
                     "(`data.py split` and train.py's own split group them).")
    if cross:
        lines.append("- Some test images nearly match training images: expect test accuracy above a clean "
                     "hold-out's on those.")
    lines += ["", "![class balance](class_balance.png)", "", "![examples](examples.png)", "", "![sizes](sizes.png)"]
    (out_dir / "eda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[2:lines.index("## Conclusions") + 4 + bool(near or exact) + bool(cross)]))
    print(f"wrote {out_dir}/eda.md and plots")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eda", help="class balance, examples, sizes, channel stats, duplicates")
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--out", default="reports/eda")
    p = sub.add_parser("split", help="write a fixed stratified train/val/test split as folders")
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--out", required=True, help="new folder for the split")
    p.add_argument("--val", type=float, default=0.15)
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=25,
                   help="group files numbered in blocks of this many consecutive numbers (0: off)")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data)
    if args.command == "eda":
        eda(data_dir, args.out)
    else:
        split_dataset(data_dir, args.out, args.val, args.test, args.seed, args.block)


if __name__ == "__main__":
    run_cli(main)
