"""Submissions and scores: what predict.py and ensemble.py write once they have probabilities.

    submission.csv            ids and labels in sample_submission.csv's order and columns (else id,label)
    SPLIT_predictions.csv     id, predicted label, confidence and every class probability
    SPLIT_report.md           when labels exist (a labeled folder or solution.csv): accuracy with and
                              without TTA, per leaderboard half (Public/Private from solution.csv's
                              Usage column), per-class report; SPLIT_confusion_matrix.png
    SPLIT_metrics.json        the same numbers for scripts
"""
import csv
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, f1_score, recall_score

from data import IMAGE_EXTS, id_and_label_columns, id_label_rows, read_table
from utils import UserError, pyplot, write_json


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
        print(f"warning: {len(blank)} rows of {solution_csv} have no Usage (first: {blank[0]}): they count "
              "in the overall score, in neither leaderboard half")
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
    # renamed when complete: an interrupted write never replaces a good submission
    partial = Path(f"{path}.tmp")
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, label_col: predicted[key(row[id_col])]})
    os.replace(partial, path)


def score_metrics(classes, labels, plain, tta, usage):
    """Accuracy and macro-F1 with and without TTA, per-class recall with TTA, per leaderboard half."""
    labels, plain, tta = np.asarray(labels), np.asarray(plain), np.asarray(tta)
    metrics = {"images": len(labels), "acc": float((plain == labels).mean()),
               "acc_tta": float((tta == labels).mean()),
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, len(classes) * 0.7), max(4, len(classes) * 0.6)))
    ConfusionMatrixDisplay.from_predictions(labels, tta, labels=classes, ax=ax, xticks_rotation=45,
                                            colorbar=False)
    ax.set_title("confusion matrix (rows: true, columns: predicted)")
    fig.tight_layout()
    fig.savefig(cm_path, dpi=100)
    plt.close(fig)
    return "\n".join(lines[2:4 + len(subsets)])


def write_probabilities(path, ids, classes, probs, extra=None):
    """id, predicted label, confidence and every class probability (extra: more columns per row)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "confidence", *(extra or {}), *classes])
        for k, (i, p) in enumerate(zip(ids, probs.tolist())):
            writer.writerow([i, classes[int(np.argmax(p))], f"{max(p):.5f}",
                             *(v[k] for v in (extra or {}).values()), *(f"{v:.5f}" for v in p)])


def publish(out_dir, split_name, ds, split, plain_probs, probs, view_names, solution, fallback,
            extra_metrics=None):
    """Write the predictions, the submission (test), and the report and metrics when labels exist.
    plain_probs: without TTA; probs: with it (what the submission uses). `fallback`: the label of
    test images listed in sample_submission.csv that could not be read. Returns the true labels or None."""
    classes, prefix = ds["classes"], Path(out_dir) / split_name
    plain = [classes[i] for i in np.asarray(plain_probs).argmax(1)]
    tta = [classes[i] for i in np.asarray(probs).argmax(1)]
    write_probabilities(f"{prefix}_predictions.csv", split.ids, classes, probs)
    labels, usage = true_labels(split, solution, classes)  # a bad solution.csv stops before the submission
    if split_name == "test":
        unreadable = [Path(p).stem for p in split.skipped]
        if unreadable:  # the submission still needs a row for them
            print(f"warning: {len(unreadable)} unreadable test image(s) (first: {unreadable[0]}) predicted "
                  f"as the most frequent training class, {fallback}")
        write_submission(Path(out_dir) / "submission.csv", split.ids + unreadable,
                         tta + [fallback] * len(unreadable), ds["sample_submission"])
        print(f"wrote {Path(out_dir) / 'submission.csv'}")
    if labels is None:
        print("no labels for these images (no labeled folder, no solution.csv): nothing to score")
        return None
    table = score_report(f"{prefix}_report.md", classes, labels, plain, tta, usage, view_names,
                         f"{prefix}_confusion_matrix.png")
    write_json(f"{prefix}_metrics.json", {"tta_views": len(view_names), "tta_view_names": view_names,
                                          **(extra_metrics or {}),
                                          **score_metrics(classes, labels, plain, tta, usage)})
    print(table)
    print(f"wrote {prefix}_report.md, {prefix}_metrics.json and {prefix}_confusion_matrix.png")
    return labels
