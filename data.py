"""Reading competition folders and splitting them without leaks (eda.py looks at the data).

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
    python data.py split --data ../shared/data/vehicles6 --out data/vehicles6-split --val 0.15 --test 0.15
"""
import argparse
import csv
import hashlib
import json
import math
import os
import random
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from choices import NUMBER_BLOCK, VAL_FRACTION
from utils import UserError, append_csv, run_cli, safe_name

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_data" / "digits"
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NEAR_DUPLICATE_BITS = 2  # difference hashes this close (of 64 bits) are the same picture,
                         # resized or re-encoded
MIN_HASH_SIDE = 32  # smaller images have too few pixels for the hash to tell pictures apart
FINGERPRINT_CACHE = Path(__file__).resolve().parent / ".cache" / "fingerprints"  # one JSON per folder read


# ---------------------------------------------------------------- images

def load_rgb(path):
    """Any image file as an RGB uint8 array: EXIF rotation applied, alpha flattened on white,
    16-bit, float, CMYK, palette and grayscale converted. Writable (np.array, not np.asarray's view of
    Pillow's buffer): ToTensorV2 shares an array it leaves unchanged, and torch wants it writable."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # 16/32-bit and float grayscale: floats in 0-1 are intensities; anything else has its used
            # range scaled to 8 bits instead of being clipped at 255
            a = np.asarray(im, dtype=np.float64)
            if im.mode == "F" and a.min() >= 0 and a.max() <= 1:
                a = 255 * a
            else:
                a = 255 * (a - a.min()) / max(a.max() - a.min(), 1e-12 if im.mode == "F" else 1)
            im = Image.fromarray(a.round().astype(np.uint8))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        return np.array(im.convert("RGB"))


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


def scan_images(paths, folder=None):
    """Check every file; warn about and drop the unreadable ones.

    Returns (kept indices, sizes as an (n, 2) array, difference hashes as uint64). With `folder`,
    fingerprints are kept in FINGERPRINT_CACHE between starts, keyed by each file's size and
    modification time: reading every image again made every start of train.py and predict.py
    slower in proportion to the dataset (0.4 ms an image on a 2-core CPU).
    """
    cache_file = None if folder is None else \
        FINGERPRINT_CACHE / f"{hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()}.json"
    cache = read_fingerprints(cache_file)
    kept, sizes, hashes, fresh = [], [], [], {}
    for i, p in enumerate(paths):
        key = str(p)
        try:
            stat = os.stat(p)
            stamp = [stat.st_size, stat.st_mtime_ns]
            cached = cache.get(key)
            w, h, hsh = cached[2:] if cached and cached[:2] == stamp else image_fingerprint(p)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            warnings.warn(f"skipping unreadable image {p}: {e}", stacklevel=2)
            continue
        kept.append(i)
        sizes.append((w, h))
        hashes.append(hsh)
        fresh[key] = stamp + [w, h, hsh]
    if cache_file is not None and fresh != cache:
        write_fingerprints(cache_file, fresh)
    return kept, np.array(sizes, dtype=np.int64).reshape(-1, 2), np.array(hashes, dtype=np.uint64)


def read_fingerprints(cache_file):
    """{path: [bytes, mtime_ns, width, height, hash]} from an earlier scan; {} if none or unreadable."""
    try:
        return json.loads(cache_file.read_text()) if cache_file is not None else {}
    except (OSError, ValueError):
        return {}


def write_fingerprints(cache_file, fingerprints):
    """Best effort (a read-only project only loses the speed-up); written whole, then renamed."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fingerprints))
        tmp.replace(cache_file)
    except OSError:
        pass


def near_duplicate_pairs(split_a, split_b=None, max_bits=NEAR_DUPLICATE_BITS):
    """Index pairs (i, j) of images whose hashes differ in at most max_bits bits, closest first; i < j
    within one split. Images under MIN_HASH_SIDE pixels are left out."""
    same = split_b is None
    split_b = split_a if same else split_b
    usable_b = split_b.sizes.min(1) >= MIN_HASH_SIDE
    pairs = []
    for start in range(0, len(split_a.paths), 1024):  # blocks of rows keep memory flat on big sets
        block = split_a.hashes[start:start + 1024, None] ^ split_b.hashes[None, :]
        close = (np.bitwise_count(block) <= max_bits) & usable_b[None, :]
        close &= (split_a.sizes[start:start + 1024].min(1) >= MIN_HASH_SIDE)[:, None]
        ii, jj = np.nonzero(close)
        keep = ii + start < jj if same else slice(None)
        pairs.extend(zip(np.bitwise_count(block[ii[keep], jj[keep]]).tolist(), (ii[keep] + start).tolist(),
                         jj[keep].tolist()))
    return [(i, j) for _, i, j in sorted(pairs)]


# ---------------------------------------------------------------- folders

@dataclass
class Split:
    """Image files and, for labeled splits, their class names. ids are file names without extension."""
    paths: list
    labels: list = None
    hashes: np.ndarray = field(default=None, repr=False)
    sizes: np.ndarray = field(default=None, repr=False)
    skipped: list = field(default_factory=list, repr=False)  # unreadable files, left out with a warning

    @property
    def ids(self):
        return [Path(p).stem for p in self.paths]

    def subset(self, idx):
        take = lambda seq: None if seq is None else [seq[i] for i in idx]
        sub = lambda arr: None if arr is None else arr[np.asarray(idx, dtype=int)]
        return Split(take(self.paths), take(self.labels), sub(self.hashes), sub(self.sizes))


def list_images(folder):
    """The image files of a folder, by name. A name that is not printable UTF-8 text is skipped with a
    warning: its id could not be written to split.csv or a submission."""
    images = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    named = [p for p in images
             if p.name.isprintable() and p.name.encode("utf-8", "replace").decode() == p.name]
    if len(named) < len(images):
        first = next(p for p in images if p not in named)
        warnings.warn(f"{len(images) - len(named)} image(s) in {folder} with a name that is not valid UTF-8 "
                      f"text (first: {first.name!r}): skipped; rename them", stacklevel=2)
    return named


def unique_ids(paths, folder):
    """Fail when two files share an id (10001.jpg and 10001.png): a submission has one row per id."""
    seen = {}
    for p in paths:
        if Path(p).stem in seen:
            raise UserError(f"{folder} has two images with id {Path(p).stem}: {seen[Path(p).stem].name} and "
                            f"{Path(p).name}; rename or remove one")
        seen[Path(p).stem] = Path(p)


def read_folder(folder, labels_csv=None):
    """A split folder: class subfolders (labeled), flat + CSV (labeled) or flat (unlabeled)."""
    folder = Path(folder)
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = list_images(folder)
    if class_dirs and loose:
        raise UserError(f"{folder} holds both class folders and {len(loose)} images outside them (first: "
                        f"{loose[0].name}): put every image in its class folder, or use a flat folder only")
    if class_dirs and labels_csv is not None and Path(labels_csv).is_file():
        warnings.warn(f"{folder} has class folders, so {labels_csv} is not read: the folders give the labels",
                      stacklevel=2)
    if class_dirs:
        paths, labels = [], []
        for d in class_dirs:
            files = list_images(d)
            nested = [s for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")]
            if nested:
                warnings.warn(f"{d} has subfolders ({nested[0].name}, ...): their images are not read; move "
                              "them into the class folder itself", stacklevel=2)
            if not files:
                raise UserError(f"class folder {d} has no images: remove it or add images")
            paths += files
            labels += [d.name] * len(files)
        split = Split(paths, labels)
    elif labels_csv is not None and Path(labels_csv).is_file():
        split = read_labels_csv(folder, labels_csv)
    else:
        split = Split(loose)
        unique_ids(split.paths, folder)
    if not split.paths:
        raise UserError(f"no images in {folder}")
    kept, split.sizes, split.hashes = scan_images(split.paths, folder)
    readable = set(kept)
    split.skipped = [p for i, p in enumerate(split.paths) if i not in readable]
    split.paths = [split.paths[i] for i in kept]
    lost = set(split.labels) - {split.labels[i] for i in kept} if split.labels else set()
    split.labels = None if split.labels is None else [split.labels[i] for i in kept]
    if not split.paths:
        raise UserError(f"no readable images in {folder}")
    if lost:  # a model with one class fewer would train without a word
        raise UserError(f"{folder}: no readable image of class {', '.join(sorted(lost))}: "
                        "fix or remove its images")
    return split


ID_COLUMNS = ("id", "image", "image_id", "imageid", "filename", "file", "name")
LABEL_COLUMNS = ("label", "class", "target", "category", "expected", "predicted", "prediction", "labels")


def read_table(path, what):
    """A CSV as (columns, rows): a byte-order mark and spaces around headers are dropped; an empty
    file, a header without rows, or duplicated column names are one-line errors."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            rows = [dict(zip(header, (v.strip() for v in row)))
                    for row in reader if any(v.strip() for v in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{what} {path} is not a readable CSV ({type(e).__name__}: {e})") from None
    if not header or not rows:
        raise UserError(f"{what} {path} has {'no header' if not header else 'a header but no rows'}")
    if len(set(header)) != len(header) or len(header) < 2:
        raise UserError(f"{what} {path} needs two or more distinct columns (id and label), got {header}")
    return header, rows


def id_and_label_columns(columns):
    """(id column, label column): by name when the CSV names them (id/image_id/..., label/class/target/
    expected/...), else the first and the last column."""
    named = lambda names: next((c for c in columns if c.lower() in names), None)
    id_col = named(ID_COLUMNS) or columns[0]
    label_col = named(LABEL_COLUMNS) or next(c for c in reversed(columns) if c != id_col)
    return id_col, label_col


def id_label_rows(path, what):
    """{id: label} from an id,label CSV (train.csv, solution.csv), the CSV's columns and rows: an empty
    id is an error, the same id with two labels too; a repeated identical row is dropped with a warning."""
    columns, rows = read_table(path, what)
    id_col, label_col = id_and_label_columns(columns)
    labels, repeated = {}, 0
    for row in rows:
        key, label = row.get(id_col, ""), row.get(label_col) or ""
        if not key:
            raise UserError(f"{what} {path} has a row with an empty {id_col}")
        if key in labels:
            if labels[key] != label:
                raise UserError(f"{what} {path} gives id {key} two labels: {labels[key]!r} and {label!r}")
            repeated += 1
        labels[key] = label
    if repeated:
        warnings.warn(f"{what} {path}: {repeated} repeated rows dropped", stacklevel=2)
    return labels, columns, rows


def check_label_spelling(labels, where):
    """Fail when two class names differ only in case or spaces ("Car" beside "car"): a typo, not a class."""
    by_key = {}
    for label in sorted(set(labels)):
        by_key.setdefault(label.strip().lower(), []).append(label)
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        raise UserError(f"{where}: class names that differ only in case or spaces: "
                        + "; ".join(" / ".join(repr(n) for n in names) for names in clashes)
                        + " (fix the typo)")


def read_labels_csv(folder, csv_path):
    """train/ with a train.csv of id,label (ids with or without the extension). Rows with an empty label
    are skipped with a warning; ids without an image are skipped with a warning."""
    labels, _, _ = id_label_rows(csv_path, "labels file")
    images = list_images(folder)
    unique_ids(images, folder)
    by_stem = {p.stem: p for p in images}
    by_name = {p.name: p for p in images}
    paths, found, missing, unlabeled = [], [], [], []
    for key, label in labels.items():
        path = by_name.get(key) or by_stem.get(key)
        if path is None:
            missing.append(key)
        elif not label:
            unlabeled.append(key)
        else:
            paths.append(path)
            found.append(label)
    if missing:
        warnings.warn(f"{len(missing)} ids in {csv_path} have no image in {folder} "
                      f"(first: {missing[0]}); skipped")
    if unlabeled:
        warnings.warn(f"{len(unlabeled)} rows of {csv_path} have an empty label "
                      f"(first: {unlabeled[0]}); skipped")
    return Split(paths, found)


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
        raise UserError(f"{data_dir} has no train/ folder "
                        "(expected train/<class>/*.jpg or train/ + train.csv)")
    ds = {"dir": data_dir, "train": read_folder(data_dir / "train", data_dir / "train.csv")}
    if ds["train"].labels is None:
        raise UserError(f"{data_dir}/train has no labels: use class subfolders or a train.csv (id,label)")
    ds["classes"] = sorted(set(ds["train"].labels))
    check_label_spelling(ds["classes"], f"{data_dir}/train")  # train/bike beside train/Bike, or in train.csv
    for name in ds["classes"]:  # labels become folder names (data.py split, superres.py upscale)
        safe_name(name, f"{data_dir}/train: class")
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
    `transform` may be a dict of named pipelines, with `pipeline[i]` naming image i's (per-class
    augmentation, synthetic images). With `views` (test-time augmentation), an item is the stack
    of every view, each transformed. fill_cache() keeps every image decoded in memory. Items are
    uint8 tensors (augment.model_input makes them the model's input)."""

    def __init__(self, paths, targets, transform, views=None, pipeline=None):
        self.paths, self.targets, self.views = list(paths), list(targets), views
        self.transforms = transform if isinstance(transform, dict) else {"train": transform}
        self.pipeline = list(pipeline) if pipeline is not None else ["train"] * len(self.paths)
        self.cache = None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        """key: an index, or (augmentation seed, index) from EpochOrder."""
        seed, i = key if isinstance(key, tuple) else (None, key)
        image = self.cache[i] if self.cache is not None else load_rgb(self.paths[i])
        transform = self.transforms[self.pipeline[i]]
        if seed is not None:
            reseed(transform, seed)
        if self.views is None:
            return transform(image=image)["image"], self.targets[i]
        stack = [transform(image=np.ascontiguousarray(view(image)))["image"] for view in self.views]
        return torch.stack(stack), self.targets[i]

    def fill_cache(self, prepare, max_bytes=4 * 2**30):
        """Decode every image once, pass it through `prepare` (augment.cache_form: resized to the input
        size, or shrunk to twice it for random crops) and keep it in memory: later epochs only augment.
        Loader workers, forked once, share it. Skipped, with a note, when the images would take more
        than max_bytes."""
        def load(path):
            return prepare(load_rgb(path))
        with ThreadPoolExecutor(os.cpu_count()) as pool:  # decoding releases the GIL
            cache, total = [], 0
            for image in pool.map(load, self.paths):
                cache.append(image)
                total += image.nbytes
                if total > max_bytes:
                    print(f"note: {len(self.paths)} images do not fit in {max_bytes / 2**30:.0f} GiB: "
                          "decoded every epoch")
                    return
        self.cache = cache


def reseed(transform, seed):
    """One random stream shared by all ops of an albumentations pipeline.

    (Compose.set_random_seed would give every op its own generator with the same seed, so that
    HorizontalFlip and VerticalFlip, both p=0.5, would always fire together.)
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


class EpochOrder(torch.utils.data.Sampler):
    """The training loader's image order, set anew before each epoch (set_epoch), so that the loader's
    workers can stay alive from epoch to epoch. It yields (augmentation seed, image index) pairs, the
    seed made of the epoch's seed and the position in the epoch: an epoch's augmentations depend on its
    seed alone, whichever worker draws them, however many workers there are, and however often an
    oversampled image repeats. That is what makes --resume exact."""

    def __init__(self):
        self.order, self.seed = [], 0

    def set_epoch(self, order, seed):
        self.order, self.seed = list(order), seed

    def __len__(self):
        return len(self.order)

    def __iter__(self):
        return iter([(self.seed * 2**32 + position, index) for position, index in enumerate(self.order)])


def make_loader(dataset, batch_size, workers, device, order=None, drop_last=False):
    """A DataLoader over `dataset`, in the EpochOrder `order` (training) or in file order. Its workers
    start once and stay alive: starting them every epoch cost 5-10% of a small model's epoch."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                                       persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                                       drop_last=drop_last)


# ---------------------------------------------------------------- leak-free splitting

def capture_number(stem):
    """(prefix, number) when a file name reads as a capture counter (IMG_0042, back472, 0042), else None.
    Ids whose leading part holds digits too (hex strings, uuids) are not counters, only names."""
    m = re.fullmatch(r"(\D*)(\d+)", stem)
    return (m[1], int(m[2])) if m else None


def number_block_links(paths, labels, block):
    """Pairs of neighbouring files in one class and one naming prefix whose numbers fall in the same
    block of `block` consecutive numbers, chained in number order."""
    numbered = {}
    for i, (path, label) in enumerate(zip(paths, labels)):
        found = capture_number(Path(path).stem)
        if found:
            numbered.setdefault((label, found[0]), []).append((found[1], i))
    links = []
    for members in numbered.values():
        members.sort()
        links += [(i, j) for (a, i), (b, j) in zip(members, members[1:]) if a // block == b // block]
    return links


@dataclass
class Grouping:
    """Group id per image; near-duplicate pairs with two different labels (label conflicts or leaks);
    and how many links were left out to keep every group within its cap."""
    groups: np.ndarray
    conflicts: list
    refused: int


def duplicate_groups(split, block=NUMBER_BLOCK, max_share=VAL_FRACTION):
    """Group images so that near-duplicates of one class share a group, and no group grows beyond
    max_share of its class (at least 1 image), so any class can be split whole groups at a time.

    Links come from two sources, strongest first: pictures whose difference hashes nearly match
    (closest first), and, when file names are capture counters, neighbouring numbers within a block
    of `block` (0 turns that off), since neighbouring frames usually show the same object. A link
    that would make a group too big is left out, so number blocks give way before hashes do. Groups
    never cross classes: two look-alike images with different labels are reported as conflicts.
    """
    labels = np.asarray(split.labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    cap = np.maximum(1, (max_share * counts).astype(int))[inverse]
    pairs = near_duplicate_pairs(split)
    links = [(i, j) for i, j in pairs if labels[i] == labels[j]]
    conflicts = [(i, j) for i, j in pairs if labels[i] != labels[j]]
    if block:
        links += number_block_links(split.paths, labels, block)
    parent, size, refused = np.arange(len(labels)), np.ones(len(labels), dtype=int), 0

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        a, b = root(i), root(j)
        if a == b:
            continue
        if size[a] + size[b] > cap[i]:
            refused += 1
            continue
        parent[b], size[a] = a, size[a] + size[b]
    return Grouping(np.array([root(i) for i in range(len(labels))]), conflicts, refused)


def group_parts(labels, groups, fractions, seed):
    """Part index per image: every class shared out among the parts in proportion to `fractions`,
    whole groups at a time, so near-duplicates never sit in two parts.

    Within a class, groups come in a seeded random order and each goes to the part furthest below
    its target count; a part therefore misses its target by less than one group. Used with
    [1 - f, f] for a hold-out split, and with k equal fractions for k-fold cross-validation.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    fractions = np.asarray(fractions, dtype=float) / sum(fractions)
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=int)
    for c in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == c)
        ids, sizes = np.unique(groups[members], return_counts=True)
        target, filled = fractions * len(members), np.zeros(len(fractions))
        for k in rng.permutation(len(ids)):
            # ties (every part empty) broken at random, so small classes do not all favour part 0
            p = int(np.argmax(target - filled + 1e-9 * rng.random(len(fractions))))
            part[members[groups[members] == ids[k]]] = p
            filled[p] += sizes[k]
    return part


def split_counts(labels, held_out, fraction):
    """Per class: images, kept, held out, held-out share, and whether that share is within
    [0.5, 2] x fraction (allowing for rounding: at least floor, at most ceil of those counts)."""
    labels, held_out = np.asarray(labels), np.asarray(held_out, dtype=bool)
    rows = []
    for c in sorted(set(labels.tolist())):
        n, held = int((labels == c).sum()), int((held_out & (labels == c)).sum())
        low, high = math.floor(0.5 * fraction * n), math.ceil(2 * fraction * n)
        rows.append({"class": c, "images": n, "train": n - held, "held_out": held,
                     "share": round(held / n, 3), "in_bounds": low <= held <= high and held < n})
    return rows


def check_split(rows, what="validation"):
    """Fail if a class has no training image; warn (one line each) about classes with nothing held out
    or a held-out share outside the bounds."""
    empty = [r["class"] for r in rows if r["train"] == 0]
    if empty:
        raise UserError(f"the split left classes with no training image: {', '.join(empty)}")
    unscored = [r["class"] for r in rows if r["held_out"] == 0]
    if unscored:
        print(f"warning: {len(unscored)} class(es) too small to hold any image out for {what} (trained on, "
              f"not scored): {', '.join(unscored)}")
    off = [f"{r['class']} {r['share']:.0%}" for r in rows if r["held_out"] and not r["in_bounds"]]
    if off:
        print(f"warning: {what} share outside [0.5, 2] x the target for: {', '.join(off)}")


def describe_grouping(grouping, split, what="validation"):
    """One line per finding of the grouping: conflicts across classes and links left out."""
    if grouping.conflicts:
        i, j = grouping.conflicts[0]
        print(f"warning: {len(grouping.conflicts)} look-alike image pair(s) carry different labels (label "
              f"conflicts or leaks; first: {split.paths[i]} = {split.labels[i]}, {split.paths[j]} = "
              f"{split.labels[j]}); python eda.py lists them all")
    if grouping.refused:
        print(f"warning: {grouping.refused} near-duplicate link(s) left out so that no group outgrows its "
              f"share of a class: some near-duplicates may sit on both sides of the {what} split")


def holdout_split(split, fraction, block, seed):
    """(train, held-out) Splits of a labeled split and the per-class count rows: about `fraction` of
    every class held out, near-duplicates grouped (duplicate_groups), never a class without training
    images."""
    if not 0 < fraction < 1:
        raise UserError(f"the validation fraction must be in (0, 1), got {fraction}")
    grouping = duplicate_groups(split, block, fraction)
    describe_grouping(grouping, split)
    held = group_parts(split.labels, grouping.groups, [1 - fraction, fraction], seed) == 1
    rows = split_counts(split.labels, held, fraction)
    check_split(rows)
    return split.subset(np.flatnonzero(~held)), split.subset(np.flatnonzero(held)), rows


def fold_split(split, folds, fold, block, seed):
    """(train, held-out, per-class rows, fold of every image) for fold `fold` of `folds`: leak-free
    group folds (duplicate_groups, group_parts), the same for every fold with the same seed."""
    grouping = duplicate_groups(split, block, 1 / folds)
    if fold == 0:
        describe_grouping(grouping, split, "cross-validation")
    part = group_parts(split.labels, grouping.groups, [1] * folds, seed)
    held = part == fold
    rows = split_counts(split.labels, held, 1 / folds)
    check_split(rows, f"fold {fold}")
    return split.subset(np.flatnonzero(~held)), split.subset(np.flatnonzero(held)), rows, part


def train_val_split(ds, val_fraction, block, seed):
    """val/ when the folder has one, else a leak-free hold-out of train/ (none at all with a fraction
    of 0: a final fit on every image); plus the per-class rows."""
    if val_fraction == 0:
        train = ds["train"]
        return train, Split([], []), split_counts(train.labels, [False] * len(train.labels), 0)
    if ds["val"] is not None:
        train, val = ds["train"], ds["val"]
        held = [False] * len(train.labels) + [True] * len(val.labels)
        return train, val, split_counts(train.labels + val.labels, held, len(val.labels) / (len(held) or 1))
    return holdout_split(ds["train"], val_fraction, block, seed)


def take_fraction(split, fraction, seed):
    """A seeded random fraction of every class (at least one image each), in the original order."""
    if fraction >= 1:
        return split
    if fraction <= 0:
        raise UserError(f"--train-fraction must be in (0, 1], got {fraction}")
    rng, labels = np.random.default_rng(seed), np.asarray(split.labels)
    keep = [i for c in sorted(set(split.labels)) for i in
            rng.permutation(np.flatnonzero(labels == c))[:max(1, round(fraction * (labels == c).sum()))]]
    return split.subset(sorted(keep))


def split_dataset(data_dir, out_dir, val, test, seed, block):
    """Write out_dir/{train,val,test}/<class>/ and manifest.csv from data_dir's labeled train set."""
    if val < 0 or test < 0 or val + test >= 1 or val + test == 0:
        raise UserError(f"--val and --test must be non-negative with a sum in (0, 1): got {val}, {test}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir} exists: choose a new --out so an earlier split is never overwritten")
    train = read_dataset(data_dir)["train"]
    grouping = duplicate_groups(train, block, min(f for f in (val, test) if f > 0))
    describe_grouping(grouping, train, "train/val/test")
    names = ["train", "val", "test"]
    part = group_parts(train.labels, grouping.groups, [1 - val - test, val, test], seed)
    rows = split_counts(train.labels, part > 0, val + test)
    check_split(rows, "val and test")
    for i in np.argsort(part, kind="stable"):
        dest = out_dir / names[part[i]] / train.labels[i] / Path(train.paths[i]).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(train.paths[i], dest)
        append_csv(out_dir / "manifest.csv", {"split": names[part[i]], "label": train.labels[i],
                                              "group": grouping.groups[i],
                                              "file": str(dest.relative_to(out_dir)),
                                              "source": train.paths[i]})
    for k, name in enumerate(names):
        print(f"{name}: {(part == k).sum()} images, {len(set(grouping.groups[part == k]))} duplicate groups")
    print(f"wrote {out_dir} (train with: python train.py --data {out_dir})")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="write a fixed stratified train/val/test split as folders")
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--out", required=True, help="new folder for the split")
    p.add_argument("--val", type=float, default=VAL_FRACTION)
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=NUMBER_BLOCK,
                   help="group files numbered in blocks of this many consecutive numbers (0: off)")
    args = parser.parse_args()
    split_dataset(resolve_data_dir(args.data), args.out, args.val, args.test, args.seed, args.block)


if __name__ == "__main__":
    run_cli(main)
