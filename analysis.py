"""Where a model's errors come from, on any labeled split (fastai's ClassificationInterpretation, and more).

Usage:
    python predict.py --analysis --split val       # predict.py calls write_analysis(...)

Writes into OUT_DIR, for a PREFIX such as "val" or "test":
    PREFIX_analysis.md               per-class precision/recall/F1, most-confused pairs, look-alike pairs,
                                     errors grouped by type, what to try next, links to the PNGs
    PREFIX_errors.csv                every error, highest loss (-log p_true) first, with its group
    PREFIX_confusion_counts.png      confusion matrix as counts
    PREFIX_confusion_normalised.png  the same, each row divided by the images of that true class
    PREFIX_worst_errors.png          the highest-loss errors: image, true, predicted, confidence
    PREFIX_pair_A_vs_B.png           errors between each of the most-confused unordered pairs, both ways

Each error gets exactly one group, the first rule that matches:
    confident   p(predicted) >= 0.9: perhaps a wrong label or a duplicate; the nearest image by embedding
                among the images labeled as the predicted class is listed
    ambiguous   p(predicted) < 0.5, or p(predicted) - p(second) < 0.2
    look-alike  true and predicted classes are a look-alike pair: the cosine similarity of their
                class-mean embeddings is among the top third (rounded down) of all pairs of classes
                that have images; so two classes have no look-alike pair
    other       anything else
"""
import csv
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, precision_recall_fscore_support

from data import load_rgb
from utils import pyplot, save_photo_figure

CONFIDENT_PROB = 0.9
AMBIGUOUS_PROB = 0.5
AMBIGUOUS_MARGIN = 0.2
RULES = {  # in order of precedence: an error takes the first group whose rule it matches
    "confident": f"p(predicted) >= {CONFIDENT_PROB}",
    "ambiguous": f"p(predicted) < {AMBIGUOUS_PROB} or p(predicted) - p(second) < {AMBIGUOUS_MARGIN}",
    "look-alike": "true and predicted classes are a look-alike pair",
    "other": "none of the above",
}
GROUPS = tuple(RULES)
ADVICE = {
    "look-alike": "train with heavier augmentation and more samples of {names}: `python train.py ... "
                  "--heavy-classes {csv} --oversample-classes {csv}`, then fine-tune on hard examples: "
                  "`python train.py --init RUN --hard-fraction 0.2`.",
    "ambiguous": "the model is unsure (mostly on {names}): predict with TTA (`python predict.py --tta 8`), "
                 "train longer (`--epochs`), and average the test_predictions.csv of several runs.",
    "confident": "check the labels of these images (mostly {names}) and their nearest images in "
                 "{errors_csv}: they may be mislabeled or duplicates.",
    "other": "errors are spread without a clear cause (mostly {names}); start from the most-confused pairs.",
}


def unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def lookalike_pairs(classes, true_idx, units):
    """[(a, b, cosine similarity)] of the top third of class pairs by the similarity of their mean embeddings.

    units are L2-normalised embeddings, so that a few images with large features do not pull a class mean;
    classes without images have no mean and take no part."""
    present = [k for k in range(len(classes)) if (true_idx == k).any()]
    if len(present) < 2:
        return []
    means = unit_rows(np.stack([units[true_idx == k].mean(0) for k in present]))
    pairs = [(present[i], present[j], float(means[i] @ means[j]))
             for i in range(len(present)) for j in range(i + 1, len(present))]
    pairs.sort(key=lambda p: -p[2])
    return pairs[:len(pairs) // 3]  # rounded down: with two classes, telling them apart is the whole task


def nearest_of_class(i, cls, true_idx, units):
    """Index and similarity of the image labeled cls closest to image i (itself excluded), else (None, "")."""
    candidates = np.flatnonzero((true_idx == cls) & (np.arange(len(true_idx)) != i))
    if not len(candidates):
        return None, ""
    sims = units[candidates] @ units[i]
    return int(candidates[sims.argmax()]), round(float(sims.max()), 4)


def error_group(p_pred, margin, pair, lookalikes):
    if p_pred >= CONFIDENT_PROB:
        return "confident"
    if p_pred < AMBIGUOUS_PROB or margin < AMBIGUOUS_MARGIN:
        return "ambiguous"
    return "look-alike" if frozenset(pair) in lookalikes else "other"


def collect_errors(classes, ids, paths, true_idx, probs, units, lookalikes):
    """One dict per misclassified image, highest loss first."""
    pred_idx = probs.argmax(1)
    top2 = np.sort(probs, axis=1)[:, -2:]  # read only for errors, which need two classes or more
    lookalike_sets = {frozenset(p[:2]) for p in lookalikes}
    errors = []
    for i in np.flatnonzero(pred_idx != true_idx):
        t, p = true_idx[i], pred_idx[i]
        group = error_group(probs[i, p], top2[i, 1] - top2[i, 0], (t, p), lookalike_sets)
        near, near_sim = nearest_of_class(i, p, true_idx, units) if group == "confident" else (None, "")
        errors.append({"id": ids[i], "file": str(paths[i]), "true": classes[t], "predicted": classes[p],
                       "confidence": float(probs[i, p]), "p_true": float(probs[i, t]),
                       "loss": float(-np.log(max(probs[i, t], 1e-12))), "group": group,
                       "nearest_predicted_class_id": "" if near is None else ids[near],
                       "nearest_predicted_class_file": "" if near is None else str(paths[near]),
                       "nearest_similarity": near_sim})
    return sorted(errors, key=lambda e: -e["loss"])


def write_errors_csv(path, errors):
    fields = ["id", "file", "true", "predicted", "confidence", "p_true", "loss", "group",
              "nearest_predicted_class_id", "nearest_predicted_class_file", "nearest_similarity"]
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(errors)


def ranked_cells(matrix):
    """(row, column, count) of the nonzero cells, largest first; ties in row-major order."""
    order = np.argsort(-matrix, axis=None, kind="stable")
    return [(r, c, int(matrix[r, c])) for r, c in zip(*np.unravel_index(order, matrix.shape)) if matrix[r, c]]


def confused_pairs(cm):
    """Directed (true, predicted, count) off the diagonal, most frequent first."""
    return ranked_cells(cm * (1 - np.eye(len(cm), dtype=cm.dtype)))


def top_unordered_pairs(cm, n):
    return [(a, b) for a, b, _ in ranked_cells(np.triu(cm + cm.T, 1))[:n]]


def save_figure(fig, out_path):
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    pyplot().close(fig)


def save_confusion(cm, classes, out_path, normalise):
    # rows of classes without images stay zero instead of dividing by zero
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    fig, ax = pyplot().subplots(figsize=(max(5, len(classes) * 0.7), max(4, len(classes) * 0.6)))
    ConfusionMatrixDisplay(shown, display_labels=classes).plot(
        ax=ax, xticks_rotation=45, colorbar=False, values_format=".2f" if normalise else "d")
    ax.set_title(("share of each true class" if normalise else "counts")
                 + " (rows: true, columns: predicted)")
    save_figure(fig, out_path)


def save_gallery(errors, title, out_path, heat_map=None):
    """The errors' images with true -> predicted class and confidence; with heat_map(file, class name) ->
    (the model's input image, a map in [0, 1]), each image is the model's input under the map of where it
    found its (wrong) prediction, as fastai's plot_top_losses draws it."""
    cols = int(np.ceil(np.sqrt(len(errors))))
    rows = int(np.ceil(len(errors) / cols))
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, errors):
        if heat_map is None:
            ax.imshow(load_rgb(e["file"]))
        else:
            image, cam = heat_map(e["file"], e["predicted"])
            ax.imshow(image)
            ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(f"{e['true']} -> {e['predicted']}\np={e['confidence']:.2f}", fontsize=8)
    fig.suptitle(title + ("\nunder the Grad-CAM map of the\npredicted class (red: where the model looked)"
                          if heat_map else ""), fontsize=9 if heat_map else None)
    fig.tight_layout()
    save_photo_figure(fig, out_path)


def safe_name(name):
    return re.sub(r"[^\w.-]+", "_", str(name))


def conclusion(errors, counts, errors_csv):
    """(dominant group, one line of advice that names the classes involved)."""
    dominant = max(GROUPS, key=lambda g: counts[g])  # ties go to the earlier group in the precedence
    in_group = [e for e in errors if e["group"] == dominant]
    names = [n for n, _ in Counter([e["true"] for e in in_group]
                                   + [e["predicted"] for e in in_group]).most_common(4)]
    advice = ADVICE[dominant].format(names=", ".join(names), csv=shlex.quote(",".join(names)),
                                     errors_csv=errors_csv)
    return dominant, advice


def table(header, rows):
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"] + [
        f"| {' | '.join(str(c) for c in row)} |" for row in rows]


def class_sections(classes, true_idx, pred_idx, cm, lookalikes):
    """Markdown: per-class precision/recall/F1, directed confusions, look-alike pairs."""
    precision, recall, f1, support = precision_recall_fscore_support(
        true_idx, pred_idx, labels=range(len(classes)), zero_division=0)
    lines = ["## Per class", ""] + table(["class", "precision", "recall", "F1", "images"], [
        (c, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", n)
        for c, p, r, f, n in zip(classes, precision, recall, f1, support)])
    lines += ["", "## Most confused (true -> predicted)", ""] + table(
        ["true", "predicted", "count", "share of true class"],
        [(classes[t], classes[p], n, f"{n / cm[t].sum():.3f}") for t, p, n in confused_pairs(cm)[:20]])
    lines += ["", "## Look-alike class pairs (closest class-mean embeddings, top third)", ""] + table(
        ["class", "class", "cosine similarity"],
        [(classes[a], classes[b], f"{s:.3f}") for a, b, s in lookalikes])
    return lines + ([] if lookalikes else ["", "None: fewer than three classes have images."])


def gallery_sections(out_dir, prefix, classes, cm, errors, gallery_size, top_pairs, heat_map=None):
    """Draws the worst errors (under their Grad-CAM maps with heat_map) and one page per most-confused
    unordered pair; markdown linking them."""
    save_gallery(errors[:gallery_size], "highest-loss errors", out_dir / f"{prefix}_worst_errors.png",
                 heat_map)
    lines = ["## Worst errors", "", f"![worst errors]({prefix}_worst_errors.png)", "",
             "## Most-confused pairs, both directions", ""]
    for a, b in top_unordered_pairs(cm, top_pairs):
        name = f"{prefix}_pair_{safe_name(classes[a])}_vs_{safe_name(classes[b])}.png"
        between = [e for e in errors if {e["true"], e["predicted"]} == {classes[a], classes[b]}]
        save_gallery(between[:gallery_size], f"{classes[a]} vs {classes[b]}", out_dir / name)
        lines.append(f"![{classes[a]} vs {classes[b]}]({name})")
    return lines


def group_sections(errors, counts, dominant, advice):
    """Markdown: errors per group with its rule, the confident errors' nearest images, the conclusion."""
    lines = ["## Errors by type (first matching rule, in this order)", ""] + table(
        ["group", "errors", "rule"], [(g, counts[g], RULES[g]) for g in GROUPS])
    confident = [e for e in errors if e["group"] == "confident"]
    if confident:
        lines += ["", "Confident errors and the nearest image labeled as the predicted class:", ""] + table(
            ["id", "true", "predicted", "confidence", "nearest", "similarity"],
            [(e["id"], e["true"], e["predicted"], f"{e['confidence']:.3f}",
              e["nearest_predicted_class_id"] or "-", e["nearest_similarity"] or "-")
             for e in confident[:20]])
    return lines + ["", "## Conclusion", "", f"Most errors are **{dominant}**: {advice}"]


def write_analysis(out_dir, prefix, classes, ids, paths, labels, probs, embeddings, gallery_size=16,
                   top_pairs=3, heat_map=None):
    """classes: list of K class names (the model's order); ids: N ids; paths: N image files (to draw
    galleries: load them with data.load_rgb(path) which returns an HxWx3 uint8 RGB array); labels: N true
    class names; probs: (N, K) numpy float array of predicted probabilities (rows sum to 1); embeddings:
    (N, D) numpy float array (the model's pooled features, one per image); heat_map: optional, see
    save_gallery. Returns a short text summary (a few lines) for the console."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes, probs, embeddings = list(classes), np.asarray(probs, float), np.asarray(embeddings, float)
    if not len(labels):
        raise ValueError("no labeled images to analyse")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels not among the model's classes: {unknown[:5]}")
    true_idx = np.array([classes.index(label) for label in labels], dtype=int)
    pred_idx = probs.argmax(1)
    units = unit_rows(embeddings)
    lookalikes = lookalike_pairs(classes, true_idx, units)
    errors = collect_errors(classes, ids, paths, true_idx, probs, units, lookalikes)
    write_errors_csv(out_dir / f"{prefix}_errors.csv", errors)
    cm = confusion_matrix(true_idx, pred_idx, labels=range(len(classes)))
    for kind, normalise in (("counts", False), ("normalised", True)):
        save_confusion(cm, classes, out_dir / f"{prefix}_confusion_{kind}.png", normalise)

    report = out_dir / f"{prefix}_analysis.md"
    lines = [f"# Error analysis: {prefix}, {len(errors)} errors in {len(labels)} images "
             f"(accuracy {1 - len(errors) / max(len(labels), 1):.4f})", "",
             f"![counts]({prefix}_confusion_counts.png) ![normalised]({prefix}_confusion_normalised.png)", ""]
    lines += class_sections(classes, true_idx, pred_idx, cm, lookalikes) + [""]
    if not errors:
        report.write_text("\n".join(lines + ["No errors: every image is classified correctly."]) + "\n")
        return f"{prefix}: no errors in {len(labels)} images; report: {report}"
    counts = Counter(e["group"] for e in errors)
    dominant, advice = conclusion(errors, counts, f"{prefix}_errors.csv")
    lines += gallery_sections(out_dir, prefix, classes, cm, errors, gallery_size, top_pairs, heat_map) + [""]
    report.write_text("\n".join(lines + group_sections(errors, counts, dominant, advice)) + "\n")
    return "\n".join([f"{prefix}: {len(errors)} errors in {len(labels)} images; by type: "
                      + ", ".join(f"{g} {counts[g]}" for g in GROUPS),
                      f"mostly {dominant}: {advice}", f"report: {report}"])
