"""Look at a competition's data before training: class balance, example images, sizes, channel
statistics, exact and near duplicates (within train, across classes, test against train), the
validation split train.py makes, and what follows for the recipe.

Usage:
    python eda.py --data ../shared/data/vehicles6                       # writes reports/eda/
    python eda.py --data DIR --out reports/eda-NAME --no-examples      # where the images may not be copied
    python eda.py --data DIR --credit "Images: NAME, LICENCE"          # the licence under the example grid

Writes eda.md, eda.json (the same figures, for reports: report.py reads it), class_balance.png,
sizes.png, examples.png and duplicates.csv into --out.
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from augment import input_size
from choices import NUMBER_BLOCK, VAL_FRACTION
from data import (
    NEAR_DUPLICATE_BITS,
    duplicate_groups,
    load_rgb,
    near_duplicate_pairs,
    read_dataset,
    resolve_data_dir,
    train_val_split,
)
from utils import append_csv, pyplot, run_cli, save_photo_figure


def save_examples(train, classes, path, rng, per_class=8, credit=""):
    """A grid of per_class random training images of every class, downscaled (80 dpi: a small PNG that
    a report can commit); credit (the images' source and licence) is written under it."""
    plt = pyplot()
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.2, len(classes) * 1.3),
                             squeeze=False)
    for row, c in enumerate(classes):
        idx = [i for i, label in enumerate(train.labels) if label == c]
        for col, i in enumerate(rng.choice(idx, min(per_class, len(idx)), replace=False)):
            axes[row, col].imshow(load_rgb(train.paths[i]))
        for ax in axes[row]:
            ax.axis("off")
        axes[row, 0].set_title(c, loc="left", fontsize=9)
    if credit:
        fig.text(0.5, 0.005, credit, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if credit else 0, 1, 1))
    save_photo_figure(fig, path)


def eda(data_dir, out_dir, examples=True, credit=""):
    """Plots, eda.md and its figures in eda.json: class balance, example images (unless examples is False;
    credit under them), sizes, channel statistics, duplicates, the validation split, the conclusions."""
    plt = pyplot()
    ds = read_dataset(data_dir)
    train, classes = ds["train"], ds["classes"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "duplicates.csv").unlink(missing_ok=True)  # rows are appended below: a rerun starts afresh
    counts = {c: train.labels.count(c) for c in classes}

    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 0.6), 4))
    ax.bar(classes, [counts[c] for c in classes])
    ax.set_title(f"train images per class ({len(train.paths)} in all)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out_dir / "class_balance.png", dpi=100)
    plt.close(fig)

    rng = np.random.default_rng(0)
    if examples:
        save_examples(train, classes, out_dir / "examples.png", rng, credit=credit)

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
    exact_conflicts = [(i, j) for i, j in exact if train.labels[i] != train.labels[j]]
    pairs = near_duplicate_pairs(train)
    near = [(i, j) for i, j in pairs if train.labels[i] == train.labels[j]]
    conflicts = [(i, j) for i, j in pairs if train.labels[i] != train.labels[j]]
    cross = near_duplicate_pairs(ds["test"], train) if ds["test"] else []
    for kind, found, a in (("exact", exact, train), ("near", near, train),
                           ("label-conflict", conflicts, train), ("train-test", cross, ds["test"])):
        for i, j in found:
            append_csv(out_dir / "duplicates.csv", {"kind": kind, "a": a.paths[i],
                                                    "label_a": a.labels[i] if a.labels else "",
                                                    "b": train.paths[j], "label_b": train.labels[j]})
    grouping = duplicate_groups(train)
    largest_group = int(np.bincount(grouping.groups).max())

    ratio = max(counts.values()) / min(counts.values())
    median_side = float(np.median(np.minimum(w, h)))
    lines = [f"# EDA of {ds['dir']}", "",
             f"- train: {len(train.paths)} images in {len(classes)} classes"
             + "".join(f"; {name}: {len(ds[name].paths)} ({'labeled' if ds[name].labels else 'unlabeled'})"
                       for name in ("val", "test") if ds[name]),
             "- images per class: " + ", ".join(f"{c} {counts[c]}" for c in classes),
             f"- imbalance ratio (largest / smallest class): {ratio:.1f}",
             f"- image size: width {w.min()}-{w.max()} (median {int(np.median(w))}), "
             f"height {h.min()}-{h.max()} (median {int(np.median(h))}); aspect ratio "
             f"{np.median(w / h):.2f} median",
             f"- channel mean (RGB, 0-1): {mean.round(3).tolist()}, std: {std.round(3).tolist()}"
             f" (over {len(sample)} images)",
             f"- exact duplicate pairs in train: {len(exact)} ({len(exact_conflicts)} with two labels); "
             f"near-duplicate pairs (hash within {NEAR_DUPLICATE_BITS} bits) within a class: {len(near)}, "
             f"across classes (label conflicts, leaks, or look-alike backgrounds): {len(conflicts)}; test "
             f"images nearly matching a train image: {len(cross)} (all listed in duplicates.csv)",
             f"- validation grouping (train.py's defaults): {len(set(grouping.groups))} groups, "
             f"the largest {largest_group} images; {grouping.refused} links left out to keep groups "
             "within 15% of a class",
             "", "## Conclusions", ""]
    if ratio >= 3:
        lines.append(f"- Imbalanced (ratio {ratio:.1f}): balance the classes (`--balance sampler` or "
                     "`--balance weights`, or `--loss focal`) and judge by macro-F1, not accuracy alone.")
    else:
        lines.append(f"- Balanced enough (ratio {ratio:.1f}): plain cross-entropy; "
                     "accuracy is a fair metric.")
    lines.append(f"- Input size: the median short side is {median_side:.0f} px, so train.py's default is "
                 f"{input_size(median_side, False)} px from scratch and {input_size(median_side, True)} px "
                 "pretrained (`--img-size`, `--upscale`).")
    if near or exact:
        lines.append("- Near-duplicates exist: validation splits must keep them on one side "
                     "(`data.py split` and train.py's own split group them).")
    if conflicts or exact_conflicts:
        lines.append(f"- {len(conflicts) + len(exact_conflicts)} look-alike pairs carry two labels: check "
                     "them in duplicates.csv (kind label-conflict); they are never grouped across classes.")
    if cross:
        lines.append("- Some test images nearly match training images: expect test accuracy above a clean "
                     "hold-out's on those.")
    _, _, split_rows = train_val_split(ds, VAL_FRACTION, NUMBER_BLOCK, 0)
    lines += ["", f"## The validation split train.py makes (its defaults: {VAL_FRACTION:.0%} of each class, "
              "near-duplicates grouped, seed 0)", "", "| class | images | train | validation | share |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['class']} | {r['images']} | {r['train']} | {r['held_out']} | {r['share']:.1%} |"
              for r in split_rows]
    lines += ["", "![class balance](class_balance.png)", "", "![sizes](sizes.png)"]
    if examples:
        lines += ["", "![examples](examples.png)"]
    (out_dir / "eda.md").write_text("\n".join(lines) + "\n")
    summary = {"data": str(ds["dir"]), "counts": counts, "imbalance_ratio": ratio,
               "median_short_side": median_side, "exact_duplicates": len(exact),
               "near_duplicates": len(near), "label_conflicts": len(conflicts),
               "test_near_train": len(cross), "split": split_rows, "credit": credit,
               "conclusions": [line[2:] for line in lines[lines.index("## Conclusions"):]
                               if line.startswith("- ")],
               "examples": "examples.png" if examples else None}
    (out_dir / "eda.json").write_text(json.dumps(summary, indent=1,
                                                 default=lambda value: value.item()) + "\n")
    print("\n".join(line for line in lines if line.startswith("- ")))
    print(f"wrote {out_dir}/eda.md and plots")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="competition folder (default: ./data, else the built-in set)")
    p.add_argument("--out", default="reports/eda")
    p.add_argument("--no-examples", dest="examples", action="store_false",
                   help="no grid of example images (for a report you commit "
                        "where the images may not be copied)")
    p.add_argument("--credit", default="", help="a line under the example images: their source and licence")
    args = p.parse_args(argv)
    eda(resolve_data_dir(args.data), args.out, args.examples, args.credit)


if __name__ == "__main__":
    run_cli(main)
