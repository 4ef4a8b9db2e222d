"""Combine trained runs into one submission: their probabilities averaged, with weights fitted on
out-of-fold predictions, or with a scikit-learn model stacked on them; and the confidence threshold
that makes pseudo-labels (train.py --pseudo) as accurate as asked.

A member is a run folder that `python predict.py --run RUN --tta N` has predicted: it holds
test_predictions.csv, and oof_tta_predictions.csv with the same views (for a k-fold parent from
train.py --folds, every training image, each predicted by the fold that did not train on it).
Weights, stacking and the threshold are fitted on those out-of-fold predictions only: they never
read a test label. Members fitted together must share their folds (same data, --folds and seed).

Usage:
    python ensemble.py runs/lite0-5fold runs/lite1-5fold                  # equal weights
    python ensemble.py runs/lite0-5fold runs/lite1-5fold --weights oof    # weights that minimise OOF log-loss
    python ensemble.py runs/lite0-5fold --stack logreg                    # logistic regression on OOF
                                                                            probabilities

Writes to --out (default runs/ensemble-TIME/): submission.csv, test_predictions.csv, and with test
labels test_report.md and test_metrics.json (Public/Private from solution.csv); cv.json holds the
ensemble's out-of-fold accuracy and macro-F1 (the stacker's from nested cross-validation over the
members' folds), the weights, and the pseudo-label threshold.
"""
import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from data import read_dataset, resolve_data_dir
from models import inference_settings
from scoring import publish
from utils import RUNS_DIR, UserError, load_checkpoint, read_csv, run_cli, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+",
                   help="predicted run folders (predict.py has written test_predictions.csv)")
    p.add_argument("--weights", default="equal", choices=("equal", "oof"),
                   help="equal, or the weights that minimise the out-of-fold log-loss")
    p.add_argument("--stack", choices=("logreg",),
                   help="a logistic regression on the members' OOF probabilities")
    p.add_argument("--pseudo-precision", type=float, default=0.99,
                   help="the OOF accuracy the pseudo-label threshold must reach on the images above it")
    p.add_argument("--data", help="competition folder (default: the first member's)")
    p.add_argument("--out", help="output folder (default: runs/ensemble-TIME)")
    return p.parse_args(argv)


def read_probabilities(path, id_column="id"):
    """(ids, class names, probabilities (n, classes), the true_label column or None) of a predictions CSV."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        classes = [c for c in reader.fieldnames if c not in ("id", "label", "confidence", "true_label")]
    if not rows:
        raise UserError(f"{path} has no predictions")
    probs = np.array([[float(r[c]) for c in classes] for r in rows])
    labels = [r["true_label"] for r in rows] if "true_label" in rows[0] else None
    return [r[id_column] for r in rows], classes, probs, labels


def load_members(runs):
    """Every member's test and out-of-fold probabilities, lined up on the same ids in the same order."""
    tests, oofs, classes = [], [], None
    for run in map(Path, runs):
        if not (run / "test_predictions.csv").is_file():
            raise UserError(f"{run} has no test_predictions.csv: python predict.py --run {run} --tta 8 first")
        ids, member_classes, probs, _ = read_probabilities(run / "test_predictions.csv")
        if classes is not None and member_classes != classes:
            raise UserError(f"{run} predicts classes {member_classes}, {runs[0]} {classes}")
        classes = member_classes
        tests.append(dict(zip(ids, probs)))
        oof = run / "oof_tta_predictions.csv"
        oofs.append(read_probabilities(oof) if oof.is_file() else None)
    test_ids = list(tests[0])
    if any(set(t) != set(test_ids) for t in tests):
        raise UserError("the members predicted different test images: predict them on the same data")
    test = np.stack([[t[i] for i in test_ids] for t in tests])
    oof = None
    if all(o is not None for o in oofs) and all(set(o[0]) == set(oofs[0][0]) for o in oofs):
        oof_ids, labels = oofs[0][0], oofs[0][3]
        oof = (oof_ids, np.array([classes.index(label) for label in labels]),
               np.stack([[dict(zip(o[0], o[2]))[i] for i in oof_ids] for o in oofs]))
    return classes, test_ids, test, oof


def fit_weights(oof_probs, labels):
    """Member weights (a softmax of free parameters, so positive and summing to one) that minimise the
    log-loss of the weighted average on out-of-fold predictions."""
    def log_loss(theta):
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mixed = np.tensordot(w, oof_probs, axes=1)
        return -np.log(np.clip(mixed[np.arange(len(labels)), labels], 1e-12, None)).mean()
    theta = minimize(log_loss, np.zeros(len(oof_probs)), method="L-BFGS-B").x
    w = np.exp(theta - theta.max())
    return w / w.sum()


def stack_features(probs):
    """(members, images, classes) probabilities -> (images, members * classes) log-probabilities."""
    return np.log(np.clip(probs, 1e-6, None)).transpose(1, 0, 2).reshape(probs.shape[1], -1)


def member_folds(run, oof_ids):
    """The fold of every out-of-fold image, from the first member's folds.csv (train.py --folds)."""
    folds_csv = Path(run) / "folds.csv"
    if not folds_csv.is_file():
        raise UserError(f"--stack needs k-fold members (train.py --folds): {run} has no folds.csv")
    fold = {r["file"]: int(r["fold"]) for r in read_csv(folds_csv)}
    return np.array([fold[i] for i in oof_ids])


def pseudo_threshold(probs, labels, precision):
    """The lowest confidence above which out-of-fold predictions are right at least `precision` of
    the time (and the share of images above it), or (None, 0) when no threshold reaches it."""
    confidence, right = probs.max(1), probs.argmax(1) == labels
    order = np.argsort(-confidence)
    accuracy_above = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(accuracy_above >= precision)
    if not len(ok):
        return None, 0.0
    return float(confidence[order][ok[-1]]), float((ok[-1] + 1) / len(order))


def main(argv=None):
    args = parse_args(argv)
    classes, test_ids, test, oof = load_members(args.runs)
    if (args.weights == "oof" or args.stack) and oof is None:
        raise UserError("--weights oof and --stack need every member's out-of-fold predictions on the same "
                        "images (k-fold runs with the same folds, predicted by predict.py)")
    weights = fit_weights(oof[2], oof[1]) if args.weights == "oof" else np.full(len(test), 1 / len(test))
    cv = {"members": args.runs, "weights": weights.round(4).tolist()}
    if oof is not None:
        oof_mixed = np.tensordot(weights, oof[2], axes=1)
        test_mixed = np.tensordot(weights, test, axes=1)
        if args.stack:
            folds = member_folds(args.runs[0], oof[0])
            stacker = LogisticRegression(C=1.0, max_iter=2000)
            # nested: each image's stacked prediction comes from a stacker fitted on the other folds
            oof_mixed = cross_val_predict(stacker, stack_features(oof[2]), oof[1], cv=PredefinedSplit(folds),
                                          method="predict_proba")
            test_mixed = stacker.fit(stack_features(oof[2]), oof[1]).predict_proba(stack_features(test))
        preds = oof_mixed.argmax(1)
        threshold, coverage = pseudo_threshold(oof_mixed, oof[1], args.pseudo_precision)
        cv.update({"oof_images": len(preds), "oof_acc": float((preds == oof[1]).mean()),
                   "oof_macro_f1": float(f1_score(oof[1], preds, average="macro")), "stack": args.stack,
                   "pseudo_threshold": threshold, "pseudo_precision": args.pseudo_precision,
                   "pseudo_oof_coverage": coverage})
        print(f"out-of-fold: accuracy {cv['oof_acc']:.4f}, macro-F1 {cv['oof_macro_f1']:.4f} on "
              f"{len(preds)} images; pseudo-labels at confidence >= {threshold} are "
              f"{args.pseudo_precision:.0%} right on {coverage:.0%} of them")
    else:
        test_mixed = np.tensordot(weights, test, axes=1)
        print("no shared out-of-fold predictions: equal weights, no CV score")

    first = Path(args.runs[0])
    member = first if (first / "best.pt").is_file() else sorted(first.glob("fold-*"))[0]
    ckpt = load_checkpoint(member / "best.pt", ("classes", "class_counts"))
    ds = read_dataset(resolve_data_dir(args.data or inference_settings(ckpt)["data"]))
    if ds["classes"] != classes or ds["test"] is None:
        raise UserError(f"{ds['dir']} is not the members' data (classes or test/ differ): pass --data")
    split = ds["test"]
    by_id = dict(zip(test_ids, test_mixed))
    missing = [i for i in split.ids if i not in by_id]
    if missing:
        raise UserError(f"the members have no prediction for {len(missing)} test images "
                        f"(first: {missing[0]})")
    probs = np.stack([by_id[i] for i in split.ids])
    out_dir = Path(args.out or RUNS_DIR / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "cv.json", cv)
    description = [f"{len(args.runs)} member(s), " + (f"stacked ({args.stack})" if args.stack else
                                                    f"weights {', '.join(f'{w:.2f}' for w in weights)}")]
    publish(out_dir, "test", ds, split, probs, probs, description, ds["solution"],
            fallback=classes[int(np.argmax(ckpt["class_counts"]))], extra_metrics={"cv": cv})
    return out_dir


if __name__ == "__main__":
    run_cli(main)
