"""Predict with a trained run: test-time augmentation, submission.csv, and a score when labels exist.

Usage:
    python predict.py --tta 8                       # latest run in runs/, the test/ folder of its data
    python predict.py --run runs/NAME --data ../shared/data/vehicles6 --tta 4
    python predict.py --split val                   # the run's own validation images (always labeled)
    python predict.py --analysis                    # error analysis: confusions, galleries, grouped errors
    python predict.py --logit-adjust 1              # correct a long-tailed training prior (balanced test)
    python predict.py --run runs/NAME --data other --out scores/other   # score on another labeled folder

Writes into the run folder (or --out):
    submission.csv            ids and labels in sample_submission.csv's order and columns (else id,label)
    test_predictions.csv      id, predicted label, confidence and every class probability (for ensembles)
    test_report.md            when labels exist (a labeled test/ or solution.csv): accuracy with and
                              without TTA (Public/Private when solution.csv has a Usage column),
                              per-class report; and test_confusion_matrix.png
    test_metrics.json         the same numbers for scripts: accuracy, macro-F1, per-class recall
    test_analysis.md          with --analysis (analysis.py): confusion matrices, most-confused pairs, galleries
                              of the worst errors, errors.csv, errors grouped by type, what to try next
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, f1_score, recall_score
from tqdm import tqdm

from augment import build_transform, tta_views, view_probs
from balance import logit_adjustment
from data import IMAGE_EXTS, ImageDataset, Split, make_loader, read_dataset, resolve_data_dir
from models import load_run
from utils import UserError, amp_dtype, latest_run, pick_device, read_csv, run_cli, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder (default: the latest under runs/)")
    p.add_argument("--data", help="competition folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--tta", type=int, default=1, help="number of test-time views (1: none)")
    p.add_argument("--out", help="folder for the predictions, submission and reports (default: the run folder)")
    p.add_argument("--solution", help="id,label[,Usage] CSV to score test predictions (default: DATA/solution.csv)")
    p.add_argument("--analysis", action="store_true", help="write the error analysis (needs labels)")
    p.add_argument("--logit-adjust", type=float, default=0.0, metavar="TAU",
                   help="subtract TAU * log(training class prior) from the logits (0: off)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, max(0, (torch.get_num_threads() or 1) - 1)))
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    return p.parse_args(argv)


def images_to_predict(args, ds, run_dir):
    if args.split == "val":
        if ds["val"] is not None:
            return ds["val"]
        rows = [r for r in read_csv(Path(run_dir) / "split.csv") if r["split"] == "val"]
        return Split([Path(r["file"]) for r in rows], [r["label"] for r in rows])
    if ds["test"] is None:
        raise UserError(f"{ds['dir']} has no test/ folder to predict (use --split val for the validation images)")
    return ds["test"]


def true_labels(split, solution_csv, classes):
    """Labels from a labeled folder or from solution.csv, plus each image's Usage (or None)."""
    if split.labels is not None:
        return split.labels, None
    if solution_csv is None:
        return None, None
    rows = {r["id"]: r for r in read_csv(solution_csv)}
    missing = [i for i in split.ids if i not in rows]
    if missing:
        raise UserError(f"{solution_csv} has no row for {len(missing)} test images (first: {missing[0]})")
    labels = [rows[i]["label"] for i in split.ids]
    unknown = set(labels) - set(classes)
    if unknown:
        raise UserError(f"{solution_csv} has labels the model does not know: {sorted(unknown)}")
    usage = [rows[i].get("Usage") for i in split.ids]
    return labels, usage if all(usage) else None


def write_submission(path, ids, labels, sample_csv):
    """In sample_submission.csv's id order and column names when there is one, else id,label sorted by id."""
    predicted = dict(zip(ids, labels))
    if sample_csv is None:
        header, order = ["id", "label"], sorted(ids)
    else:
        rows = read_csv(sample_csv)
        header = list(rows[0]) if rows else ["id", "label"]
        order = [r[header[0]] for r in rows]
    key = lambda i: Path(i).stem if Path(i).suffix.lower() in IMAGE_EXTS else i  # ids given with extensions
    missing = [i for i in order if key(i) not in predicted]
    if missing:
        raise UserError(f"{sample_csv} lists {len(missing)} ids with no image in test/ (first: {missing[0]})")
    lines = [f"{header[0]},{header[1]}"] + [f"{i},{predicted[key(i)]}" for i in order]
    Path(path).write_text("\n".join(lines) + "\n")


def score_metrics(classes, labels, plain, tta, usage):
    """Accuracy and macro-F1 with and without TTA, per-class recall with TTA, per leaderboard half."""
    labels, plain, tta = np.asarray(labels), np.asarray(plain), np.asarray(tta)
    metrics = {"images": len(labels), "acc": float((plain == labels).mean()), "acc_tta": float((tta == labels).mean()),
               "macro_f1": float(f1_score(labels, plain, labels=classes, average="macro", zero_division=0)),
               "macro_f1_tta": float(f1_score(labels, tta, labels=classes, average="macro", zero_division=0)),
               "recall_tta": dict(zip(classes, recall_score(labels, tta, labels=classes, average=None,
                                                            zero_division=0).tolist()))}
    for half in sorted(set(usage)) if usage is not None else []:
        mask = np.asarray(usage) == half
        metrics[f"acc_{half.lower()}"] = float((plain[mask] == labels[mask]).mean())
        metrics[f"acc_tta_{half.lower()}"] = float((tta[mask] == labels[mask]).mean())
    return metrics


def score_report(path, classes, labels, plain, tta, usage, n_views, cm_path):
    """Markdown with accuracy (plain and TTA, per leaderboard half) and sklearn's per-class report."""
    labels, plain, tta = np.asarray(labels), np.asarray(plain), np.asarray(tta)
    lines = [f"# Scores on {len(labels)} images", "", "| subset | images | accuracy | accuracy with TTA |",
             "|---|---|---|---|"]
    subsets = [("all", np.ones(len(labels), bool))]
    if usage is not None:
        subsets += [(u, np.asarray(usage) == u) for u in sorted(set(usage))]
    for name, mask in subsets:
        lines.append(f"| {name} | {mask.sum()} | {(plain[mask] == labels[mask]).mean():.4f} | "
                     f"{(tta[mask] == labels[mask]).mean():.4f} |")
    lines += ["", f"TTA: {n_views} views.", "", "Per class (with TTA):", "", "```",
              classification_report(labels, tta, labels=classes, digits=4, zero_division=0), "```",
              "", f"![confusion matrix]({Path(cm_path).name})"]
    Path(path).write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(5, len(classes) * 0.7), max(4, len(classes) * 0.6)))
    ConfusionMatrixDisplay.from_predictions(labels, tta, labels=classes, ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title("confusion matrix (rows: true, columns: predicted)")
    fig.tight_layout()
    fig.savefig(cm_path, dpi=100)
    plt.close(fig)
    return "\n".join(lines[2:4 + len(subsets)])


def main(argv=None):
    args = parse_args(argv)
    run_dir = Path(args.run) if args.run else latest_run()
    device = pick_device(args.device)
    model, ckpt = load_run(run_dir, device)
    classes = ckpt["classes"]
    ds = read_dataset(resolve_data_dir(args.data or ckpt["args"].get("data")))
    split = images_to_predict(args, ds, run_dir)
    views = tta_views(args.tta, ckpt["aug"])
    print(f"{run_dir}: {ckpt['arch']} from epoch {ckpt['epoch']}; {len(split.paths)} {args.split} images, "
          f"{len(views)} view(s) each")

    transform = build_transform("none", ckpt["img_size"], ckpt["mean"], ckpt["std"], ckpt["upscale"])
    loader = make_loader(ImageDataset(split.paths, [-1] * len(split.paths), transform, views), args.batch_size,
                         args.workers, device)
    dtype = amp_dtype(device, args.amp)
    logit_shift = None
    if args.logit_adjust:
        if "class_counts" not in ckpt:
            raise UserError(f"--logit-adjust: {run_dir}/best.pt does not record its class counts (retrain it)")
        logit_shift = logit_adjustment(ckpt["class_counts"], args.logit_adjust)
    probs, embeddings = [], []
    for images, _ in tqdm(loader, desc="predict", disable=None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            batch_probs, batch_embeddings = view_probs(model, images.to(device, non_blocking=True), logit_shift)
        probs.append(batch_probs.cpu())
        embeddings.append(batch_embeddings.cpu())
    probs = torch.cat(probs, dim=1)  # (views, images, classes)
    plain = [classes[i] for i in probs[0].argmax(1)]
    mean_probs = probs.mean(0)
    tta = [classes[i] for i in mean_probs.argmax(1)]

    out_dir = Path(args.out) if args.out else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / args.split
    with open(f"{prefix}_predictions.csv", "w") as f:
        f.write("id,label,confidence," + ",".join(classes) + "\n")
        for i, label, p in zip(split.ids, tta, mean_probs.tolist()):
            f.write(f"{i},{label},{max(p):.5f}," + ",".join(f"{v:.5f}" for v in p) + "\n")
    if args.split == "test":
        write_submission(out_dir / "submission.csv", split.ids, tta, ds["sample_submission"])
        print(f"wrote {out_dir / 'submission.csv'}")

    solution = args.solution or (ds["solution"] if args.split == "test" else None)
    labels, usage = true_labels(split, solution, classes)
    if labels is None:
        if args.analysis:
            raise UserError("--analysis needs labels: a labeled folder, --split val, or --solution CSV")
        print("no labels for these images (no labeled folder, no solution.csv): nothing to score")
        return
    table = score_report(f"{prefix}_report.md", classes, labels, plain, tta, usage, len(views),
                         f"{prefix}_confusion_matrix.png")
    write_json(f"{prefix}_metrics.json", {"tta_views": len(views), "logit_adjust": args.logit_adjust,
                                          **score_metrics(classes, labels, plain, tta, usage)})
    print(table)
    print(f"wrote {prefix}_report.md, {prefix}_metrics.json and {prefix}_confusion_matrix.png")
    if args.analysis:
        from analysis import write_analysis
        print(write_analysis(out_dir, args.split, classes, split.ids, split.paths, labels, mean_probs.numpy(),
                             torch.cat(embeddings).numpy()))


if __name__ == "__main__":
    run_cli(main)
