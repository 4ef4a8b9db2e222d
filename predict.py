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

Writes into the run folder (or --out), through scoring.py: submission.csv, test_predictions.csv,
and with labels (a labeled test/ or solution.csv) test_report.md, test_metrics.json and the confusion
matrix, with and without TTA and per leaderboard half. Also:
    oof_tta_predictions.csv   the validation images (a k-fold parent's: every training image, out of
                              fold) with the same views, for ensemble.py
    test_analysis.md          with --analysis (analysis.py): confusion matrices, most-confused pairs,
                              galleries of the worst errors, errors.csv, errors grouped by type, what to
                              try next
    images_predictions.csv    with --images: file, then the top-k classes and their probabilities
    model.onnx / model.ts     with --export, beside preprocessing.json (input size, resize, mean, std,
                              classes)

A k-fold parent folder (train.py --folds K) predicts as the average of its folds; each fold keeps
the test-time views its own held-out fold does not reject.
"""
import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from augment import build_transform, model_input, named_views, view_probs
from balance import logit_adjustment
from choices import AMP, IMAGE_SIZE, NON_NEGATIVE_INT, POSITIVE_INT, bounded
from data import (
    ImageDataset,
    Split,
    list_images,
    load_rgb,
    make_loader,
    read_dataset,
    resolve_data_dir,
    scan_images,
)
from models import inference_settings, load_run
from scoring import publish, write_probabilities
from utils import (
    UserError,
    amp_dtype,
    check_writable,
    latest_run,
    load_checkpoint,
    loader_workers,
    pick_device,
    read_csv,
    run_cli,
    run_folder,
    write_json,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder (default: the latest under runs/)")
    p.add_argument("--data", help="competition folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--images", metavar="FILE_OR_DIR",
                   help="predict these image files instead (no competition folder)")
    p.add_argument("--top-k", type=POSITIVE_INT, default=3, help="classes per image in --images' CSV")
    p.add_argument("--export", choices=("onnx", "torchscript"),
                   help="write the model for deployment and stop")
    p.add_argument("--tta", type=POSITIVE_INT, default=1,
                   help="test-time views to consider (1: none); "
                        "those that lower validation accuracy are dropped")
    p.add_argument("--img-size", type=IMAGE_SIZE, metavar="PX",
                   help="input size to predict at (default: the run's test size, train.py --test-size)")
    p.add_argument("--out",
                   help="folder for the predictions, submission and reports (default: the run folder)")
    p.add_argument("--solution",
                   help="id,label[,Usage] CSV to score test predictions (default: DATA/solution.csv)")
    p.add_argument("--analysis", action="store_true", help="write the error analysis (needs labels)")
    p.add_argument("--logit-adjust", type=bounded(float), default=0.0, metavar="TAU",
                   help="subtract TAU * log(training class prior) from the logits (0: off)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a best.pt that holds more than weights (it could run code): "
                        "only for your own files")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--workers", type=NON_NEGATIVE_INT,
                   help="data loader processes (default: one per core but the main process's, at most 8)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=AMP, help="as train.py")
    return p.parse_args(argv)


def load_for_prediction(run_dir, device, args):
    """load_run, at the input size --img-size asks for instead of the run's test size."""
    model, ckpt = load_run(run_dir, device, args.trust_checkpoint)
    if args.img_size:
        ckpt["inference"]["test_size"] = args.img_size
    return model, ckpt


def images_to_predict(split_name, ds, run_dir):
    if split_name == "val":
        if ds is not None and ds["val"] is not None:
            return ds["val"]
        listing = Path(run_dir) / "split.csv"  # what train.py held out
                                               # (a copied checkpoint may come without it)
        rows = [r for r in read_csv(listing) if r["split"] == "val" and Path(r["file"]).is_file()] \
            if listing.is_file() else []
        return Split([Path(r["file"]) for r in rows], [r["label"] for r in rows])
    if ds["test"] is None:
        raise UserError(f"{ds['dir']} has no test/ folder to predict "
                        "(use --split val for the validation images)")
    return ds["test"]


def predict_views(model, ckpt, paths, views, args, device, logit_shift=None, desc="predict"):
    """Softmax of every view of every image, (views, images, classes), and the plain view's pooled
    features (images, D)."""
    settings = ckpt["inference"]
    transform = build_transform("none", settings["test_size"], settings["upscale"])
    view_fns = [fn for _, fn in views]
    loader = make_loader(ImageDataset(paths, [-1] * len(paths), transform, view_fns), args.batch_size,
                         args.workers, device)
    dtype = amp_dtype(device, args.amp)
    probs, embeddings = [], []
    for images, _ in tqdm(loader, desc=desc, disable=None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            batch_probs, batch_embeddings = view_probs(model, images.to(device, non_blocking=True),
                                                       settings["mean"], settings["std"], logit_shift)
        probs.append(batch_probs.cpu())
        embeddings.append(batch_embeddings.cpu())
    return torch.cat(probs, dim=1), torch.cat(embeddings)


def choose_views(probs, targets):
    """Indices of the views to average, chosen on labeled (validation) predictions. Starting from the
    plain view, each candidate in order joins when the average with it is at least as accurate and has
    a lower log-loss; the views are then kept only if together they get at least two more images, and
    0.5% more of them, right than the plain view does: a smaller gain is noise on a few hundred images,
    and averaging costs time. Returns (views, plain accuracy, accuracy of the views kept)."""
    targets = torch.as_tensor(targets)

    def score(kept):
        mean = probs[kept].mean(0)
        accuracy = (mean.argmax(1) == targets).float().mean().item()
        return accuracy, -mean[torch.arange(len(targets)), targets].clamp_min(1e-12).log().mean().item()

    kept, best = [0], score([0])
    plain = best
    for k in range(1, len(probs)):
        accuracy, log_loss = score(kept + [k])
        if accuracy >= best[0] and log_loss < best[1]:
            kept, best = kept + [k], (accuracy, log_loss)
    if (best[0] - plain[0]) * len(targets) < max(2, 0.005 * len(targets)) - 1e-6:
        return [0], plain[0], plain[0]
    return kept, plain[0], best[0]


def test_time_views(args, ckpt, model, ds, run_dir, device, logit_shift):
    """The first --tta candidate views, less those that lower validation accuracy (when predicting
    test images: validation picks them, never the images being predicted). Returns the views and,
    when they were chosen on validation images, those images and their probabilities averaged over
    the views kept (out-of-fold predictions for ensembles)."""
    candidates = named_views(ckpt["inference"]["tta_views"])
    if args.tta > len(candidates):
        print(f"--tta {args.tta}: this model has {len(candidates)} candidate views (those its training "
              f"augmentation showed it: {', '.join(name for name, _ in candidates)})")
    candidates = candidates[:max(1, args.tta)]
    if args.split == "val":
        return candidates, None, None
    val = images_to_predict("val", ds, run_dir)
    if not val.paths:
        print("no validation images to choose test-time views on: using every candidate")
        return candidates, None, None
    probs, _ = predict_views(model, ckpt, val.paths, candidates, args, device, logit_shift,
                             desc="choose views")
    targets = [ckpt["classes"].index(label) for label in val.labels]
    kept, plain_acc, tta_acc = choose_views(probs, targets)
    if len(candidates) > 1:
        print(f"test-time views chosen on {len(targets)} validation images: "
              f"{', '.join(candidates[k][0] for k in kept)} of {len(candidates)} "
              f"(validation accuracy {plain_acc:.4f} plain, {tta_acc:.4f} "
              f"with them{'' if len(kept) > 1 else '; no view helped enough to use'})")
    return [candidates[k] for k in kept], val, probs[kept].mean(0)


def members_of(run_dir):
    """The runs whose predictions are averaged: the run itself, or every fold of a k-fold parent
    folder (train.py --folds)."""
    run_dir = Path(run_dir)
    folds = sorted(run_dir.glob("fold-*/best.pt"), key=lambda p: int(p.parent.name.split("-")[1]))
    if (run_dir / "best.pt").is_file() or not folds:
        return [run_dir]
    if (run_dir / "folds.csv").is_file():
        expected = {int(r["fold"]) for r in read_csv(run_dir / "folds.csv")}
        if len(folds) < len(expected):
            raise UserError(f"{run_dir} has {len(folds)} of its {len(expected)} folds trained: train the "
                            "rest (python train.py --folds K --fold I --name NAME) first")
    return [p.parent for p in folds]


def export_model(model, ckpt, out_dir, fmt):
    """The model as ONNX or TorchScript (logits out, batch size free), and preprocessing.json: what an
    application must do to an RGB image before the model sees it."""
    settings = ckpt["inference"]
    size = settings["test_size"]
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
        "mean": list(settings["mean"]), "std": list(settings["std"]),
        "normalise": "(x - mean) / std per channel",
        "output": "logits; softmax gives class probabilities", "classes": ckpt["classes"]})
    print(f"wrote {path} and {out_dir / 'preprocessing.json'}")


def predict_images(args, model, ckpt, run_dir, device, logit_shift):
    """--images: any files or a folder of them, no competition layout; a CSV of the top-k classes."""
    source = Path(args.images)
    if not source.exists():
        raise UserError(f"--images: {source} not found")
    paths = list_images(source) if source.is_dir() else [source]
    kept, _, _ = scan_images(paths)
    paths = [paths[i] for i in kept]
    if not paths:
        raise UserError(f"--images: no readable image in {source}")
    views, _, _ = test_time_views(args, ckpt, model, None, run_dir, device, logit_shift)
    probs, _ = predict_views(model, ckpt, paths, views, args, device, logit_shift)
    top = probs.mean(0).topk(min(args.top_k, len(ckpt["classes"])), dim=1)
    out = Path(args.out or run_dir) / "images_predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file"] + [f"{kind}_{k + 1}" for k in range(top.indices.shape[1])
                                    for kind in ("class", "prob")])
        for path, indices, values in zip(paths, top.indices.tolist(), top.values.tolist()):
            writer.writerow([path] + [v for i, p in zip(indices, values)
                                      for v in (ckpt["classes"][i], f"{p:.5f}")])
    print(f"wrote {out} ({len(paths)} images, top {top.indices.shape[1]} classes, {len(views)} view(s) each)")


def predict_members(args, members, ds, device):
    """Every member's prediction of the images: the same test images averaged over members, or for
    --split val each member's own validation images (a k-fold parent's: out-of-fold predictions).
    Returns (images, plain probabilities, TTA probabilities, embeddings, views used, validation part)."""
    plain, tta, embeddings, splits, val_parts = [], [], [], [], []
    for member in members:
        model, ckpt = load_for_prediction(member, device, args)
        if ckpt["classes"] != ds["classes"]:
            only_run = sorted(set(ckpt["classes"]) - set(ds["classes"]))
            only_data = sorted(set(ds["classes"]) - set(ckpt["classes"]))
            raise UserError(f"{member} was trained on other classes than {ds['dir']}/train holds (only in "
                            f"the run: {only_run or 'none'}; only in the data: {only_data or 'none'}): "
                            "predict with matching data")
        shift = logit_adjustment(ckpt["class_counts"], args.logit_adjust) if args.logit_adjust else None
        split = images_to_predict(args.split, ds, member)
        views, val, val_probs = test_time_views(args, ckpt, model, ds, member, device, shift)
        print(f"{member}: {ckpt['inference']['arch']} from epoch {ckpt['epoch']}; {len(split.paths)} "
              f"{args.split} images at {ckpt['inference']['test_size']} px, {len(views)} view(s) each")
        probs, member_embeddings = predict_views(model, ckpt, split.paths, views, args, device, shift)
        plain.append(probs[0])
        tta.append(probs.mean(0))
        embeddings.append(member_embeddings)
        splits.append(split)
        val_parts.append((val, val_probs))
    if args.split == "val":  # each member predicted its own images: put them side by side
        joined = Split([p for s in splits for p in s.paths], [label for s in splits for label in s.labels])
        return joined, torch.cat(plain), torch.cat(tta), torch.cat(embeddings), views, val_parts
    return splits[0], torch.stack(plain).mean(0), torch.stack(tta).mean(0), embeddings[0], views, val_parts


def grad_cam_maps(run_dir, classes, device, args):
    """heat_map(image file, class name) -> (the model's plain input image, its Grad-CAM map for that class)
    of the run's model (a fold's, for folds), for the error gallery."""
    model, ckpt = load_for_prediction(run_dir, device, args)
    settings = ckpt["inference"]
    transform = build_transform("none", settings["test_size"], settings["upscale"])

    def heat_map(path, class_name):
        image = transform(image=load_rgb(path))["image"]
        x = model_input(image[None], device, settings["mean"], settings["std"])
        cam = model.grad_cam(x, torch.tensor([classes.index(class_name)], device=device))[0]
        return image.permute(1, 2, 0).numpy(), cam.cpu().numpy()
    return heat_map


def main(argv=None):
    args = parse_args(argv)
    run_dir = run_folder(args.run, "--run") if args.run else latest_run(nested="fold-*")
    device = pick_device(args.device)
    args.workers = loader_workers(args.workers, device)
    members = members_of(run_dir)
    if args.export or args.images:
        if len(members) > 1:
            raise UserError(f"{run_dir} holds {len(members)} folds: pass one of them ({members[0]})")
        model, ckpt = load_for_prediction(run_dir, device, args)
        if args.export:
            return export_model(model, ckpt, Path(args.out or run_dir), args.export)
        shift = logit_adjustment(ckpt["class_counts"], args.logit_adjust) if args.logit_adjust else None
        return predict_images(args, model, ckpt, run_dir, device, shift)
    ckpt = load_checkpoint(members[0] / "best.pt", ("classes",), trust=args.trust_checkpoint)
    ds = read_dataset(resolve_data_dir(args.data or inference_settings(ckpt)["data"]))
    classes = ds["classes"]
    split, plain_probs, mean_probs, embeddings, views, val_parts = predict_members(args, members, ds, device)

    out_dir = Path(args.out) if args.out else run_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_writable(out_dir, 0)
    except (OSError, UserError) as e:
        raise UserError(f"cannot write the predictions into {out_dir} ({getattr(e, 'strerror', None) or e}): "
                        "pass --out DIR") from None
    if all(val is not None for val, _ in val_parts):  # validation with the same views: for ensemble.py
        write_probabilities(out_dir / "oof_tta_predictions.csv",
                            [p for val, _ in val_parts for p in val.paths],
                            classes, torch.cat([probs for _, probs in val_parts]),
                            {"true_label": [label for val, _ in val_parts for label in val.labels]})
    solution = args.solution or (ds["solution"] if args.split == "test" else None)
    labels = publish(out_dir, args.split, ds, split, plain_probs, mean_probs, [name for name, _ in views],
                     solution, fallback=classes[int(np.argmax(ckpt["class_counts"]))],
                     extra_metrics={"logit_adjust": args.logit_adjust})
    if args.analysis:
        if labels is None:
            raise UserError("--analysis needs labels: a labeled folder, --split val, or --solution CSV")
        from analysis import write_analysis
        print(write_analysis(out_dir, args.split, classes, split.ids, split.paths, labels, mean_probs.numpy(),
                             embeddings.numpy(), heat_map=grad_cam_maps(members[0], classes, device, args)))

if __name__ == "__main__":
    run_cli(main)
