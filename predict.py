"""Predict with a trained run: test-time augmentation, submission.csv, and a score when labels exist.

Usage:
    python predict.py --tta 8                       # latest run in runs/, the test/ folder of its data
    python predict.py --run runs/NAME --data ../shared/data/vehicles6 --tta 4
    python predict.py --split val                   # the run's own validation images (always labeled)
    python predict.py --analysis                    # error analysis: confusions, galleries, grouped errors
    python predict.py --logit-adjust 1              # correct a long-tailed training prior (balanced test)
    python predict.py --run runs/NAME --data other --out scores/other   # score on another labeled folder
    python predict.py --images photos/ --tta 8      # any image files, no competition folder: top-k CSV
    python predict.py --export onnx                 # model.onnx + preprocessing.json (also: torchscript)

Writes into the run folder (or --out):
    submission.csv            ids and labels in sample_submission.csv's order and columns (else id,label)
    test_predictions.csv      id, predicted label, confidence and every class probability (for ensembles)
    test_report.md            when labels exist (a labeled test/ or solution.csv): accuracy with and
                              without TTA (Public/Private when solution.csv has a Usage column),
                              per-class report; and test_confusion_matrix.png
    test_metrics.json         the same numbers for scripts: accuracy, macro-F1, per-class recall
    test_analysis.md          with --analysis (analysis.py): confusion matrices, most-confused pairs, galleries
                              of the worst errors, errors.csv, errors grouped by type, what to try next
    images_predictions.csv    with --images: file, then the top-k classes and their probabilities
    model.onnx / model.ts     with --export, beside preprocessing.json (input size, resize, mean, std, classes)
"""
import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, f1_score, recall_score
from tqdm import tqdm

from augment import build_transform, tta_views, view_probs
from balance import logit_adjustment
from data import (IMAGE_EXTS, ImageDataset, Split, id_and_label_columns, id_label_rows, make_loader, read_dataset,
                  read_table, resolve_data_dir)
from models import load_run
from utils import UserError, amp_dtype, latest_run, pick_device, read_csv, run_cli, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder (default: the latest under runs/)")
    p.add_argument("--data", help="competition folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--images", metavar="FILE_OR_DIR", help="predict these image files instead (no competition folder)")
    p.add_argument("--top-k", type=int, default=3, help="classes per image in --images' CSV")
    p.add_argument("--export", choices=("onnx", "torchscript"), help="write the model for deployment and stop")
    p.add_argument("--tta", type=int, default=1,
                   help="test-time views to consider (1: none); those that lower validation accuracy are dropped")
    p.add_argument("--out", help="folder for the predictions, submission and reports (default: the run folder)")
    p.add_argument("--solution", help="id,label[,Usage] CSV to score test predictions (default: DATA/solution.csv)")
    p.add_argument("--analysis", action="store_true", help="write the error analysis (needs labels)")
    p.add_argument("--logit-adjust", type=float, default=0.0, metavar="TAU",
                   help="subtract TAU * log(training class prior) from the logits (0: off)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a best.pt that holds more than weights (it could run code): only for your own files")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, max(0, (torch.get_num_threads() or 1) - 1)))
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    return p.parse_args(argv)


def images_to_predict(split_name, ds, run_dir):
    if split_name == "val":
        if ds is not None and ds["val"] is not None:
            return ds["val"]
        rows = [r for r in read_csv(Path(run_dir) / "split.csv") if r["split"] == "val" and Path(r["file"]).is_file()]
        return Split([Path(r["file"]) for r in rows], [r["label"] for r in rows])
    if ds["test"] is None:
        raise UserError(f"{ds['dir']} has no test/ folder to predict (use --split val for the validation images)")
    return ds["test"]


def true_labels(split, solution_csv, classes):
    """Labels from a labeled folder or from solution.csv, plus each image's Usage (Public/Private, or
    None without a Usage column). A row with an empty Usage counts in neither half, with a warning."""
    if split.labels is not None:
        return split.labels, None
    if solution_csv is None:
        return None, None
    labels, columns, rows = id_label_rows(solution_csv, "solution")
    missing = [i for i in split.ids if i not in labels]
    if missing:
        raise UserError(f"{solution_csv} has no row for {len(missing)} test images (first: {missing[0]})")
    unknown = {labels[i] for i in split.ids} - set(classes)
    if unknown:
        raise UserError(f"{solution_csv} has labels the model does not know: {sorted(unknown)}")
    usage_col = next((c for c in columns if c.lower() == "usage"), None)
    if usage_col is None:
        return [labels[i] for i in split.ids], None
    id_col = id_and_label_columns(columns)[0]
    usage = {r[id_col]: r.get(usage_col, "") for r in rows}
    blank = [i for i in split.ids if not usage[i]]
    if blank:
        print(f"warning: {len(blank)} rows of {solution_csv} have no Usage (first: {blank[0]}): they count in the "
              "overall score, in neither leaderboard half")
    return [labels[i] for i in split.ids], [usage[i] for i in split.ids]


def write_submission(path, ids, labels, sample_csv):
    """In sample_submission.csv's row order and columns (its label column filled in, any other column
    kept as it is), else id,label sorted by id. Written with the csv module, so ids with commas or
    quotes survive. Every id the sample lists must have a prediction."""
    predicted = dict(zip(ids, labels))
    if sample_csv is None:
        columns, id_col, label_col = ["id", "label"], "id", "label"
        rows = [{"id": i} for i in sorted(ids)]
    else:
        columns, rows = read_table(sample_csv, "sample submission")
        id_col, label_col = id_and_label_columns(columns)
        order = [r[id_col] for r in rows]
        if len(set(order)) != len(order):
            twice = next(i for i in order if order.count(i) > 1)
            raise UserError(f"{sample_csv} lists id {twice} more than once")
    key = lambda i: Path(i).stem if Path(i).suffix.lower() in IMAGE_EXTS else i  # ids given with extensions
    missing = [r[id_col] for r in rows if key(r[id_col]) not in predicted]
    if missing:
        raise UserError(f"{sample_csv} lists {len(missing)} ids with no image in test/ (first: {missing[0]})")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, label_col: predicted[key(row[id_col])]})


def score_metrics(classes, labels, plain, tta, usage):
    """Accuracy and macro-F1 with and without TTA, per-class recall with TTA, per leaderboard half."""
    labels, plain, tta = np.asarray(labels), np.asarray(plain), np.asarray(tta)
    metrics = {"images": len(labels), "acc": float((plain == labels).mean()), "acc_tta": float((tta == labels).mean()),
               "macro_f1": float(f1_score(labels, plain, labels=classes, average="macro", zero_division=0)),
               "macro_f1_tta": float(f1_score(labels, tta, labels=classes, average="macro", zero_division=0)),
               "recall_tta": dict(zip(classes, recall_score(labels, tta, labels=classes, average=None,
                                                            zero_division=0).tolist()))}
    for half in sorted(set(usage) - {""}) if usage is not None else []:
        mask = np.asarray(usage) == half
        metrics[f"acc_{half.lower()}"] = float((plain[mask] == labels[mask]).mean())
        metrics[f"acc_tta_{half.lower()}"] = float((tta[mask] == labels[mask]).mean())
    return metrics


def score_report(path, classes, labels, plain, tta, usage, view_names, cm_path):
    """Markdown with accuracy (plain and TTA, per leaderboard half) and sklearn's per-class report."""
    labels, plain, tta = np.asarray(labels), np.asarray(plain), np.asarray(tta)
    lines = [f"# Scores on {len(labels)} images", "", "| subset | images | accuracy | accuracy with TTA |",
             "|---|---|---|---|"]
    subsets = [("all", np.ones(len(labels), bool))]
    if usage is not None:
        subsets += [(u, np.asarray(usage) == u) for u in sorted(set(usage) - {""})]
    for name, mask in subsets:
        lines.append(f"| {name} | {mask.sum()} | {(plain[mask] == labels[mask]).mean():.4f} | "
                     f"{(tta[mask] == labels[mask]).mean():.4f} |")
    lines += ["", f"TTA views: {', '.join(view_names)}.", "", "Per class (with TTA):", "", "```",
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


def predict_views(model, ckpt, paths, views, args, device, logit_shift=None, desc="predict"):
    """Softmax of every view of every image, (views, images, classes), and the plain view's pooled
    features (images, D)."""
    settings = ckpt["args"]
    transform = build_transform("none", settings["img_size"], ckpt["mean"], ckpt["std"], settings["upscale"])
    view_fns = [fn for _, fn in views]
    loader = make_loader(ImageDataset(paths, [-1] * len(paths), transform, view_fns), args.batch_size, args.workers,
                         device)
    dtype = amp_dtype(device, args.amp)
    probs, embeddings = [], []
    for images, _ in tqdm(loader, desc=desc, disable=None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            batch_probs, batch_embeddings = view_probs(model, images.to(device, non_blocking=True), logit_shift)
        probs.append(batch_probs.cpu())
        embeddings.append(batch_embeddings.cpu())
    return torch.cat(probs, dim=1), torch.cat(embeddings)


def choose_views(probs, targets):
    """Indices of the views to average, chosen greedily on labeled (validation) predictions: starting
    from the plain view, each candidate in order joins when the average with it is at least as
    accurate and has a lower log-loss. A view that costs accuracy there is never used."""
    targets = torch.as_tensor(targets)

    def score(kept):
        mean = probs[kept].mean(0)
        accuracy = (mean.argmax(1) == targets).float().mean().item()
        return accuracy, -mean[torch.arange(len(targets)), targets].clamp_min(1e-12).log().mean().item()

    kept, best = [0], score([0])
    first = best
    for k in range(1, len(probs)):
        accuracy, log_loss = score(kept + [k])
        if accuracy >= best[0] and log_loss < best[1]:
            kept, best = kept + [k], (accuracy, log_loss)
    return kept, first[0], best[0]


def test_time_views(args, ckpt, model, ds, run_dir, device, logit_shift):
    """The first --tta candidate views, less those that lower validation accuracy (when predicting
    test images: validation picks them, never the images being predicted)."""
    aug = ckpt["args"]["aug"]
    candidates = tta_views(aug, ckpt["args"]["vflip"])
    if args.tta > len(candidates):
        print(f"--tta {args.tta}: a model trained with --aug {aug} has {len(candidates)} views; using them all")
    candidates = candidates[:max(1, args.tta)]
    if len(candidates) == 1 or args.split == "val":
        return candidates
    val = images_to_predict("val", ds, run_dir)
    if not val.paths:
        print("no validation images to choose test-time views on: using every candidate")
        return candidates
    probs, _ = predict_views(model, ckpt, val.paths, candidates, args, device, logit_shift, desc="choose views")
    targets = [ckpt["classes"].index(label) for label in val.labels]
    kept, plain_acc, tta_acc = choose_views(probs, targets)
    print(f"test-time views chosen on {len(targets)} validation images: {', '.join(candidates[k][0] for k in kept)} "
          f"of {len(candidates)} (validation accuracy {plain_acc:.4f} plain, {tta_acc:.4f} averaged)")
    return [candidates[k] for k in kept]


def export_model(model, ckpt, out_dir, fmt):
    """The model as ONNX or TorchScript (logits out, batch size free), and preprocessing.json: what an
    application must do to an RGB image before the model sees it."""
    settings = ckpt["args"]
    size = settings["img_size"]
    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    example = torch.zeros(2, 3, size, size)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        path = out_dir / "model.onnx"
        torch.onnx.export(model, (example,), path, input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, dynamo=True)
    else:
        path = out_dir / "model.ts"
        with torch.no_grad():
            torch.jit.trace(model, example).save(path)
    write_json(out_dir / "preprocessing.json", {
        "model": path.name, "input": f"float32 N x 3 x {size} x {size}, RGB", "resize": f"{size} x {size}, "
        f"{settings['upscale']} when enlarging, area when shrinking", "scale": "pixel / 255",
        "mean": list(ckpt["mean"]), "std": list(ckpt["std"]), "normalise": "(x - mean) / std per channel",
        "output": "logits; softmax gives class probabilities", "classes": ckpt["classes"]})
    print(f"wrote {path} and {out_dir / 'preprocessing.json'}")


def predict_images(args, model, ckpt, run_dir, device, logit_shift):
    """--images: any files or a folder of them, no competition layout; a CSV of the top-k classes."""
    from data import list_images, scan_images
    source = Path(args.images)
    if not source.exists():
        raise UserError(f"--images: {source} not found")
    paths = list_images(source) if source.is_dir() else [source]
    kept, _, _ = scan_images(paths)
    paths = [paths[i] for i in kept]
    if not paths:
        raise UserError(f"--images: no readable image in {source}")
    views = test_time_views(args, ckpt, model, None, run_dir, device, logit_shift)
    probs, _ = predict_views(model, ckpt, paths, views, args, device, logit_shift)
    top = probs.mean(0).topk(min(args.top_k, len(ckpt["classes"])), dim=1)
    out = Path(args.out or run_dir) / "images_predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file"] + [f"{kind}_{k + 1}" for k in range(top.indices.shape[1]) for kind in ("class", "prob")])
        for path, indices, values in zip(paths, top.indices.tolist(), top.values.tolist()):
            writer.writerow([path] + [v for i, p in zip(indices, values) for v in (ckpt["classes"][i], f"{p:.5f}")])
    print(f"wrote {out} ({len(paths)} images, top {top.indices.shape[1]} classes, {len(views)} view(s) each)")


def main(argv=None):
    args = parse_args(argv)
    run_dir = Path(args.run) if args.run else latest_run()
    device = pick_device(args.device)
    model, ckpt = load_run(run_dir, device, args.trust_checkpoint)
    if args.export:
        return export_model(model, ckpt, Path(args.out or run_dir), args.export)
    logit_shift = None
    if args.logit_adjust:
        logit_shift = logit_adjustment(ckpt["class_counts"], args.logit_adjust)
    if args.images:
        return predict_images(args, model, ckpt, run_dir, device, logit_shift)
    classes = ckpt["classes"]
    ds = read_dataset(resolve_data_dir(args.data or ckpt["args"].get("data")))
    if ds["classes"] != classes:
        only_run, only_data = sorted(set(classes) - set(ds["classes"])), sorted(set(ds["classes"]) - set(classes))
        raise UserError(f"{run_dir} was trained on other classes than {ds['dir']}/train holds (only in the run: "
                        f"{only_run or 'none'}; only in the data: {only_data or 'none'}): predict with matching data")
    split = images_to_predict(args.split, ds, run_dir)
    views = test_time_views(args, ckpt, model, ds, run_dir, device, logit_shift)
    print(f"{run_dir}: {ckpt['args']['arch']} from epoch {ckpt['epoch']}; {len(split.paths)} {args.split} images, "
          f"{len(views)} view(s) each")
    probs, embeddings = predict_views(model, ckpt, split.paths, views, args, device, logit_shift)
    plain = [classes[i] for i in probs[0].argmax(1)]
    mean_probs = probs.mean(0)
    tta = [classes[i] for i in mean_probs.argmax(1)]

    out_dir = Path(args.out) if args.out else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / args.split
    with open(f"{prefix}_predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "confidence", *classes])
        for i, label, p in zip(split.ids, tta, mean_probs.tolist()):
            writer.writerow([i, label, f"{max(p):.5f}", *(f"{v:.5f}" for v in p)])
    if args.split == "test":
        unreadable = [Path(p).stem for p in split.skipped]
        if unreadable:  # the submission still needs a row for them: the most frequent training class
            fallback = classes[int(np.argmax(ckpt["class_counts"]))]
            print(f"warning: {len(unreadable)} unreadable test image(s) (first: {unreadable[0]}) predicted as the "
                  f"most frequent training class, {fallback}")
        write_submission(out_dir / "submission.csv", split.ids + unreadable, tta + [fallback] * len(unreadable)
                         if unreadable else tta, ds["sample_submission"])
        print(f"wrote {out_dir / 'submission.csv'}")

    solution = args.solution or (ds["solution"] if args.split == "test" else None)
    labels, usage = true_labels(split, solution, classes)
    if labels is None:
        if args.analysis:
            raise UserError("--analysis needs labels: a labeled folder, --split val, or --solution CSV")
        print("no labels for these images (no labeled folder, no solution.csv): nothing to score")
        return
    table = score_report(f"{prefix}_report.md", classes, labels, plain, tta, usage, [name for name, _ in views],
                         f"{prefix}_confusion_matrix.png")
    write_json(f"{prefix}_metrics.json", {"tta_views": len(views), "tta_view_names": [name for name, _ in views],
                                          "logit_adjust": args.logit_adjust,
                                          **score_metrics(classes, labels, plain, tta, usage)})
    print(table)
    print(f"wrote {prefix}_report.md, {prefix}_metrics.json and {prefix}_confusion_matrix.png")
    if args.analysis:
        from analysis import write_analysis
        print(write_analysis(out_dir, args.split, classes, split.ids, split.paths, labels, mean_probs.numpy(),
                             embeddings.numpy()))


if __name__ == "__main__":
    run_cli(main)
