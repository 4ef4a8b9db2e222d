"""The leaderboard ladder on one dataset, every rung measured: a single fold, the 5-fold ensemble,
+ TTA, + stacking, + pseudo-labels, a full refit; CV (out-of-fold) accuracy beside Public and Private.

    python bench/leaderboard.py ../shared/data/trashnet6          # every row, efficientnet_lite0 defaults
    python bench/leaderboard.py ../shared/data/vehicles6 --rows folds,stack
    python bench/leaderboard.py ../shared/data/trashnet6 --report  # the report from the runs so far

Rows and the commands behind them (NAME = the dataset's folder name, runs under runs/lb/):
    folds     python train.py --pretrained --aug heavy --folds 5 --data D --name lb/NAME, then
              python predict.py --run runs/lb/NAME/fold-I for each fold ("single fold", mean ± std)
              and for the parent ("5-fold ensemble"), both without TTA (--out .../no-tta)
    tta       python predict.py --run runs/lb/NAME --tta 8 ("+ TTA": each fold keeps the views its
              held-out fold does not reject)
    stack     python ensemble.py runs/lb/NAME --stack logreg (CV by nested cross-validation)
    pseudo    python train.py ... --folds 5 --pseudo runs/lb/NAME --pseudo-threshold T --name lb/NAME-pseudo,
              T from the stacked ensemble's OOF predictions (99% right above it), then predict --tta 8
    refit     python train.py --pretrained --aug heavy --val-fraction 0 --data D --name lb/NAME-refit (the
              epochs the folds trained: their best epoch is their last), then predict --tta 8 (no
              validation to choose views on: all 8)
Training time is the CPU time (user + system) of the train.py processes behind each row.
Writes reports/leaderboard-NAME.md; results accumulate in reports/leaderboard-NAME.json; the README's
leaderboard table (between its markers) shows every dataset measured so far.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from readme_table import replace_in_readme

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("folds", "tta", "stack", "pseudo", "refit")
DEFAULT = ["--pretrained", "--aug", "heavy"]


def run(*command):
    """A script of the project as a user runs it; returns the CPU seconds it took (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"error: {' '.join(map(str, command))} failed:\n{result.stdout[-2000:]}\n"
                 f"{result.stderr[-2000:]}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def scores(folder, cv=None):
    """Public/Private accuracy (with TTA when it was used) of a predicted folder."""
    m = json.loads((Path(folder) / "test_metrics.json").read_text())
    return {"cv": cv, "public": m["acc_tta_public"], "private": m["acc_tta_private"], "acc": m["acc_tta"]}


def oof_accuracy(folder):
    """Accuracy of predict.py's out-of-fold predictions with the views it kept."""
    import csv
    with open(Path(folder) / "oof_tta_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(np.mean([r["label"] == r["true_label"] for r in rows]))


def measure(row, data, name, results):
    parent = ROOT / "runs" / "lb" / name
    if row == "folds":
        seconds = run("train.py", *DEFAULT, "--folds", "5", "--data", data, "--name", f"lb/{name}")
        cv = json.loads((parent / "cv.json").read_text())
        singles = []
        for k in range(5):
            run("predict.py", "--run", parent / f"fold-{k}", "--out", parent / f"fold-{k}" / "no-tta")
            singles.append(scores(parent / f"fold-{k}" / "no-tta", cv["fold_acc"][k]))
        results["single fold (mean ± std of 5)"] = {
            key: [float(np.mean([s[key] for s in singles])), float(np.std([s[key] for s in singles]))]
            for key in ("cv", "public", "private", "acc")} | {"cpu_s": seconds / 5}
        run("predict.py", "--run", parent, "--out", parent / "no-tta")
        results["5-fold ensemble"] = scores(parent / "no-tta", cv["oof_acc"]) | {"cpu_s": seconds}
    elif row == "tta":
        run("predict.py", "--run", parent, "--tta", "8")
        results["+ TTA"] = scores(parent, oof_accuracy(parent)) | {
            "cpu_s": results["5-fold ensemble"]["cpu_s"]}
    elif row == "stack":
        run("ensemble.py", parent, "--stack", "logreg", "--out", parent / "stack")
        cv = json.loads((parent / "stack" / "cv.json").read_text())
        results["+ stacking (logistic regression)"] = scores(parent / "stack", cv["oof_acc"]) | {
            "cpu_s": results["5-fold ensemble"]["cpu_s"], "pseudo_threshold": cv["pseudo_threshold"]}
    elif row == "pseudo":
        threshold = results["+ stacking (logistic regression)"]["pseudo_threshold"]
        seconds = run("train.py", *DEFAULT, "--folds", "5", "--data", data, "--name", f"lb/{name}-pseudo",
                      "--pseudo", parent / "stack" / "test_predictions.csv", "--pseudo-threshold", threshold)
        run("predict.py", "--run", f"{parent}-pseudo", "--tta", "8")
        results[f"+ pseudo-labels (confidence >= {threshold:.3f}), TTA"] = scores(
            f"{parent}-pseudo", oof_accuracy(f"{parent}-pseudo")) | {"cpu_s": seconds}
    elif row == "refit":
        config = json.loads((parent / "fold-0" / "config.json").read_text())["args"]
        seconds = run("train.py", *DEFAULT, "--val-fraction", "0", "--epochs", config["epochs"],
                      "--data", data, "--name", f"lb/{name}-refit")
        run("predict.py", "--run", f"{parent}-refit", "--tta", "8")
        results["full refit (all of train/), TTA"] = scores(f"{parent}-refit") | {"cpu_s": seconds}


def write_report(name, results):
    fmt = lambda v: "" if v is None else (f"{v[0]:.4f} ± {v[1]:.4f}" if isinstance(v, list) else f"{v:.4f}")
    lines = [f"# Leaderboard ladder on {name}", "",
             f"Generated by `python bench/leaderboard.py ../shared/data/{name}` (its docstring lists "
             "every command); efficientnet_lite0 at train.py's defaults, 5 leak-free folds, 2 CPU cores. "
             "CV is the out-of-fold accuracy on the training images; Public and Private are solution.csv's "
             "halves of the test set.", "",
             "| row | CV (OOF) accuracy | Public | Private | test (all) | training CPU time |",
             "|---|---|---|---|---|---|"]
    for row, r in results.items():
        lines.append(f"| {row} | {fmt(r['cv'])} | {fmt(r['public'])} | {fmt(r['private'])} | "
                     f"{fmt(r['acc'])} | {r['cpu_s'] / 60:.0f} min |")
    path = ROOT / "reports" / f"leaderboard-{name}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    update_readme()


def update_readme():
    """The README's leaderboard table, between its leaderboard markers: every dataset measured so far, one
    column each, "CV / Public / Private" per row."""
    ladders = {path.stem.removeprefix("leaderboard-"): json.loads(path.read_text())
               for path in sorted((ROOT / "reports").glob("leaderboard-*.json"))}
    rows = {row: None for results in ladders.values() for row in results}  # every row once, in ladder order
    short = lambda v: "" if v is None else f"{v[0] if isinstance(v, list) else v:.3f}"
    table = ["| row | " + " | ".join(f"{name}: CV / Public / Private" for name in ladders) + " |",
             "|---|" + "---|" * len(ladders)]
    for row in rows:
        cells = [" / ".join(short(results[row][key]) for key in ("cv", "public", "private"))
                 if row in results else "" for results in ladders.values()]
        # the README shows means
        table.append(f"| {row.replace(' ± std', '')} | " + " | ".join(cells) + " |")
    replace_in_readme("leaderboard", table)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="competition folder with solution.csv")
    p.add_argument("--rows", default=",".join(ROWS),
                   help="comma-separated, in order, from: " + ", ".join(ROWS))
    p.add_argument("--report", action="store_true", help="only write the report from the results so far")
    args = p.parse_args()
    name = Path(args.data).resolve().name
    store = ROOT / "reports" / f"leaderboard-{name}.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for row in ([] if args.report else args.rows.split(",")):
        started = time.time()
        measure(row, Path(args.data).resolve(), name, results)
        store.write_text(json.dumps(results, indent=1))
        print(f"{row}: {time.time() - started:.0f} s", flush=True)
    write_report(name, results)


if __name__ == "__main__":
    main()
