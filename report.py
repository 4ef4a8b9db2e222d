"""The task, answered in one place: reports/task.md, written from the records in reports/ alone.

Usage:
    python report.py                    # reports/task.md in seconds: no data, no runs, no training
    python report.py --reports DIR      # from the records in another folder (task.md is written there)

The task's steps in its order: the data, the augmentation and the loader, training (scratch against
transfer, flips against heavy, with and without TTA, upscaling; schedules and loss switching), class
balancing, error analysis and fine-tuning on hard examples, the conditional generator, the leaderboard
and the submission. Each section has the question, the commands that answer it, a table from the
records (reports/GRID.json, which experiments.py rewrites after every row; the first table of
reports/GRID.md for grids older than those records; reports/leaderboard-NAME.json; eda.json),
a figure, and an answer computed from the table. A difference between two rows is called one only
where it exceeds twice its standard error over seeds; with one seed the answer says so. A record not
made yet leaves its rows "pending" beside the command that makes them.

The figures are made by the commands listed under them (they need the data or a trained run) and are
committed small (at most 300 KB, images downscaled), with the images' licence.
"""
import argparse
import json
import math
import re
from pathlib import Path

import numpy as np

from bench.readme_table import replace_in_readme
from choices import AUGMENTATIONS
from utils import run_cli

ROOT = Path(__file__).resolve().parent
DATA = "../shared/data/vehicles6"
LICENCE = "Images: vehicles6, Zenodo record 6634554 (vehicle type images), CC BY 4.0; downscaled."
MAIN_GRID = "augmentation-vehicles6"
MAIN_COMMAND = f"python experiments.py {MAIN_GRID} --data {DATA} --seeds 3"
SIZE = 160  # efficientnet_lite0's input on vehicles6, as train.py derives it (the previews' size)
# a pretrained run of section 3 whose errors section 5 draws
ERRORS_RUN = f"runs/{MAIN_GRID}/pretrained-flips-s0"


def load_json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def grid_rows(reports, tag):
    """{row label: [summaries of its finished runs]} in the grid's order in grids.json,
    from reports/TAG.json."""
    record = load_json(reports / f"{tag}.json") or {}
    order = list(json.loads((ROOT / "grids.json").read_text()).get(tag, {}).get("rows", {}))
    runs = {}
    for name in sorted(record, key=lambda n: int(n.rsplit("-s", 1)[1])):
        runs.setdefault(name.rsplit("-s", 1)[0], []).append(record[name]["summary"])
    return {label: runs.get(label, []) for label in order or runs}


def mean_std(values, digits=4):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def seeds_cell(runs, wanted=3):
    return f"{len(runs)}/{wanted}"


def summary(values):
    """(mean, sample std, seeds) of a row's values over seeds; a report's table cell gives it as is."""
    if isinstance(values, tuple):
        return values
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def compare(a, b, name_a, name_b):
    """One clause: the means of two rows' values over seeds (lists, or summary's tuples), their difference
    in points, and whether it exceeds twice its standard error (seed noise)."""
    if not a or not b:
        return f"{name_a} against {name_b}: pending"
    return f"{name_a} {summary(a)[0]:.4f} against {name_b} {summary(b)[0]:.4f} ({difference(a, b)})"


def seed_noise(a, b):
    """(a's mean minus b's in points, twice the difference's standard error over seeds or None with a
    single seed, a's seeds, b's seeds)."""
    (mean_a, std_a, n_a), (mean_b, std_b, n_b) = summary(a), summary(b)
    two_se = 200 * math.sqrt(std_a**2 / n_a + std_b**2 / n_b) if min(n_a, n_b) > 1 else None
    return 100 * (mean_a - mean_b), two_se, n_a, n_b


def difference(a, b):
    """a's mean minus b's in points, and whether it exceeds twice its standard error over seeds."""
    diff, two_se, n_a, n_b = seed_noise(a, b)
    if two_se is None:
        return f"{diff:+.2f} points; {n_a} and {n_b} seeds: no spread yet"
    return (f"{diff:+.2f} points, {'beyond' if abs(diff) > two_se else 'within'} seed noise: twice its "
            f"standard error is {two_se:.2f}; {n_a} and {n_b} seeds")


def report_table(path, column):
    """{row label: (mean, std, seeds)} of one column of the first table of a grid's report: for the
    grids whose per-run records predate reports/GRID.json (balancing, errorloop)."""
    text = path.read_text() if path.is_file() else ""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    if not lines:
        return {}
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        if len(cells) != len(header) or column not in cells or cells["row"] in rows:
            break  # the first table only
        mean, _, std = cells[column].partition(" ± ")
        rows[cells["row"]] = float(mean), float(std or 0), int(cells["seeds done"].split("/")[0])
    return rows


def against(rows, reference):
    """A table's cells: each row's macro-F1 and how it compares with the reference row."""
    return [[label, f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}", str(n),
             "the reference" if label == reference else short_difference((mean, std, n), rows[reference])]
            for label, (mean, std, n) in rows.items()]


def values(runs, key):
    return [run[key] for run in runs]


def table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def figure(reports, path, alt, made_by, credit=""):
    """A figure's markdown relative to reports/, with the command that makes it;
    'missing' when it is not there."""
    if not (reports / path).is_file():
        return [f"*Figure missing:* `{made_by}`", ""]
    return [f"![{alt}]({path})", "", f"*{credit + ' ' if credit else ''}Made by* `{made_by}`.", ""]


def section(title, question, commands, body, answer):
    """A section's lines; answer: a paragraph, or lines (a table) under the word."""
    answer = [f"**Answer.** {answer}"] if isinstance(answer, str) else ["**Answer.**", "", *answer]
    return [f"## {title}", "", f"**Question.** {question}", "", "```bash", *commands, "```", "", *body,
            *answer, ""]


# ---------------------------------------------------------------- the sections, in the task's order

def data_section(reports):
    eda = load_json(reports / "eda-vehicles6" / "eda.json")
    command = f"python eda.py --data {DATA} --out reports/eda-vehicles6 --credit '{LICENCE}'"
    if eda is None:
        return section("1. The data", "What is in the car data?", [command], [], "pending"), "pending"
    rows = [[r["class"], str(r["images"]), str(r["train"]), str(r["held_out"])] for r in eda["split"]]
    body = [f"{sum(eda['counts'].values())} labeled training images of {DATA} "
            f"([full EDA](eda-vehicles6/eda.md)); the validation split train.py makes at its defaults:", "",
            *table(["class", "images", "train", "validation"], rows), "",
            *figure(reports, "eda-vehicles6/examples.png", "examples of each class", command, LICENCE)]
    answer = (f"Balance ratio {eda['imbalance_ratio']:.1f}, images {eda['median_short_side']:.0f} px "
              f"on the short side, {eda['near_duplicates']} near-duplicate pairs within classes, "
              f"{eda['label_conflicts']} across, {eda['test_near_train']} test images nearly "
              "matching a training image. Conclusions drawn: "
              + " ".join(eda["conclusions"]))
    headline = (f"{sum(eda['counts'].values())} images in {len(eda['counts'])} classes, balance ratio "
                f"{eda['imbalance_ratio']:.1f}, {eda['median_short_side']:.0f} px, {eda['near_duplicates']} "
                "near-duplicate pairs kept on one side of the split")
    return section("1. The data", "What is in the car data: class balance, sizes, duplicates, "
                   "and what follows for the recipe?", [command], body, answer), headline


def augmentation_section(reports, main_rows):
    from augment import augmentations, tta_views
    rows = [[f"`--aug {aug}`", ", ".join(type(op).__name__ for op in augmentations(aug, SIZE)),
             ", ".join(name for name, _ in tta_views(aug))] for aug in AUGMENTATIONS]
    command = (f"python augment.py --data {DATA} --aug {' '.join(AUGMENTATIONS)} --img-size {SIZE} "
               f"--out reports/task/augmentations.png --credit '{LICENCE}'")
    body = ["Each pipeline (augment.py, albumentations) resizes to the model's input, then draws "
            "its changes; TTA candidates are only views training showed the model, and predict.py "
            "keeps those that do not lower validation accuracy. The loader decodes every image once "
            "into a cache at the input size (a 2x margin for heavy's crop), hands uint8 batches "
            "over, and normalises them on the device.", "",
            *table(["pipeline", "albumentations ops", "TTA candidate views"], rows), "",
            *figure(reports, "task/augmentations.png", "each pipeline drawn seven times", command, LICENCE)]
    picks, short = [], []
    for kind in ("scratch", "pretrained"):
        kept = {aug: values(main_rows.get(f"{kind}-{aug}", []), "kept_val_acc")
                for aug in ("flips", "light", "heavy")}
        best = max(kept, key=lambda aug: np.mean(kept[aug])) if all(kept.values()) else "pending"
        short.append(f"{kind} {best}")
        seeds = sorted({len(runs) for runs in kept.values()})
        picks.append(f"{kind} {best}" + (f" (mean validation accuracy {np.mean(kept[best]):.4f} at the kept "
                                         f"epoch; {'-'.join(map(str, seeds))} seeds a row)"
                                         if all(kept.values()) else ""))
    answer = ("Of flips, light and heavy, validation, which chooses, picks " + "; ".join(picks)
              + ". The test scores of every pipeline are in section 3.")
    return section("2. Augmentation and the loader", "What does each pipeline show the model, and how do the "
                   "images reach it?", [command], body, answer), "validation picks " + ", ".join(short)


def training_section(reports, rows):
    header = ["row", "seeds", "test acc", "test acc, TTA 8", "TTA gain (paired)", "macro-F1, TTA",
              "kept epoch", "s / epoch"]
    cells = []
    for label, runs in rows.items():
        if not runs:
            cells.append([label, "0/3", "pending", "", "", "", "", ""])
            continue
        gains = [run["acc_tta"] - run["acc"] for run in runs]
        cells.append([label, seeds_cell(runs), mean_std(values(runs, "acc")),
                      mean_std(values(runs, "acc_tta")), mean_std(gains), mean_std(values(runs, "f1_tta")),
                      mean_std(values(runs, "kept_epoch"), 1), mean_std(values(runs, "seconds"), 0)])
    acc = {label: values(runs, "acc") for label, runs in rows.items()}
    tta = [run["acc_tta"] - run["acc"] for runs in rows.values() for run in runs]
    body = [f"Every row at train.py's defaults for {DATA} (the small CNN at 64 px for 30 epochs; "
            "efficientnet_lite0 from ImageNet weights at 160 px for 8 epochs, bicubic upscaling "
            "unless the row says otherwise), seeds 0-2; per-class recall, rows' arguments and "
            f"curves in [{MAIN_GRID}.md]({MAIN_GRID}.md).", "",
            *table(header, cells), "",
            *figure(reports, f"{MAIN_GRID}_bars.png", "test accuracy with TTA, mean ± std over seeds",
                    MAIN_COMMAND),
            "Loss, accuracy and learning rate of one run (the small CNN with flips, seed 0): a warmup epoch "
            "into OneCycle, validation loss flat for the last third, best.pt kept at its lowest:", "",
            *figure(reports, "task/curves_scratch-flips-s0.png", "loss, accuracy and learning rate per epoch",
                    f"cp runs/{MAIN_GRID}/scratch-flips-s0/curves.png "
                    "reports/task/curves_scratch-flips-s0.png"),
            *schedule_lines(reports)]
    heavy_gain = [100 * (np.mean(acc[f"{kind}-heavy"]) - np.mean(acc[f"{kind}-flips"]))
                  if acc.get(f"{kind}-heavy") and acc.get(f"{kind}-flips") else None
                  for kind in ("scratch", "pretrained")]
    seeds = [f"{len(acc.get(f'{kind}-heavy', []))} and {len(acc.get(f'{kind}-flips', []))} seeds"
             for kind in ("scratch", "pretrained")]
    headline = ("heavy against flips: " + ", ".join(
        f"{kind} {'pending' if gain is None else f'{gain:+.2f} points ({n})'}"
        for kind, gain, n in zip(("scratch", "pretrained"), heavy_gain, seeds))
                + (f"; TTA {100 * np.mean(tta):+.2f} points on average over {len(tta)} runs" if tta else ""))
    with_tta = {label: values(runs, "acc_tta") for label, runs in rows.items()}
    answer = ["Differences in points of test accuracy, of means over the seeds each row has (the table "
              "above); *beyond noise* where a difference exceeds twice its standard error (2 SE):", "",
              *table(["comparison", "without TTA", "with TTA 8"], comparison_cells(acc, with_tta, rows)),
              *in_words(MAIN_GRID)]
    return section("3. Training: transfer, flips or heavy, TTA, upscaling",
                   "Does heavy augmentation pay off over flips, from scratch and with ImageNet weights; does "
                   "transfer; does TTA; does learned upscaling?",
                   [*json.loads((ROOT / "grids.json").read_text())[MAIN_GRID].get("prepare", []),
                    MAIN_COMMAND],
                   body, answer), headline


def comparison_cells(acc, with_tta, rows):
    """Section 3's answer, a row per question: rows' test accuracy without and with TTA, differenced."""
    def both(a, b):
        return [short_difference(scores.get(a), scores.get(b)) for scores in (acc, with_tta)]

    cells = [[f"heavy over flips, {how}", *both(f"{kind}-heavy", f"{kind}-flips")]
             for kind, how in (("scratch", "from scratch"), ("pretrained", "with transfer"))]
    cells += [[f"transfer over scratch, {aug}", *both(f"pretrained-{aug}", f"scratch-{aug}")]
              for aug in ("flips", "light", "heavy")]
    for kind in ("scratch", "pretrained"):  # paired: each run with and without its views
        gains = [run["acc_tta"] - run["acc"] for label, runs in rows.items() if label.startswith(kind)
                 for run in runs]
        cells.append([f"TTA 8 over none, {kind} (the same runs)", "",
                      f"{100 * np.mean(gains):+.2f} (mean of {len(gains)} runs, {100 * min(gains):+.2f} to "
                      f"{100 * max(gains):+.2f})" if gains else "pending"])
    upscaling = {"ESPCN": "pretrained-light-espcn", "bicubic": "pretrained-light",
                 "nearest": "pretrained-light-nearest"}
    cells += [[f"upscaling to 160 px: {a} over {b}", *both(upscaling[a], upscaling[b])]
              for a, b in (("ESPCN", "bicubic"), ("bicubic", "nearest"))]
    return cells


def short_difference(a, b):
    """A table cell: a's mean minus b's in points, and whether it exceeds twice its standard error."""
    if not a or not b:
        return "pending"
    diff, two_se, n_a, n_b = seed_noise(a, b)
    if two_se is None:
        return f"{diff:+.2f} ({n_a} and {n_b} seeds: no spread yet)"
    return f"{diff:+.2f} ({'beyond' if abs(diff) > two_se else 'within'} noise, 2 SE {two_se:.2f})"


def grid_findings(name):
    """A grid's findings from grids.json in words: not its figures, nor those that point back here."""
    grid = json.loads((ROOT / "grids.json").read_text())[name]
    return [finding for finding in grid.get("findings", [])
            if "task.md" not in finding and not finding.startswith("![")]


def in_words(name):
    """An answer's closing lines: the grid's findings as a list."""
    findings = grid_findings(name)
    return ["", "In words (the grid's findings, kept in grids.json):", "", *(f"- {f}" for f in findings)]


def schedule_lines(reports):
    """Schedules, warmup and the CE -> focal switches: the default OneCycle against each other row."""
    lines = ["Schedules and the switch from cross-entropy to focal loss (by epoch and on a "
             "validation plateau); the kept epoch is the one best.pt holds (best validation score, "
             "early stopping after it):", ""]
    for tag, what in (("schedules-vehicles6", "the small CNN on vehicles6"),
                      ("schedules-lite0",
                       "efficientnet_lite0 on the long-tailed vehicles6-lt, balanced test")):
        rows = {label: runs for label, runs in grid_rows(reports, tag).items() if runs}
        if not rows:
            continue
        base = values(rows.get("onecycle", []), "f1_tta")
        cells = [[label, seeds_cell(runs), mean_std(values(runs, "f1_tta")),
                  short_difference(values(runs, "f1_tta"), base) if label != "onecycle" else "the default",
                  mean_std([r.get("kept_epoch", r.get("best_epoch")) for r in runs], 1)]
                 for label, runs in rows.items()]
        lines += [f"[{tag}]({tag}.md), {what}:", "",
                  *table(["row", "seeds", "test macro-F1, TTA", "against onecycle", "kept epoch"], cells), ""]
    return lines + ["Warmup and the small CNN's recipe: [archive/recipe-full.md](archive/recipe-full.md).",
                    ""]


def balancing_section(reports):
    path = reports / "archive" / "balancing.md"
    rows = report_table(path, "macro-F1, TTA")
    command = "python experiments.py balancing --data ../shared/data/vehicles6-lt --seeds 3 --workers 1"
    body = ["The small CNN on the long-tailed vehicles6-lt (car 640 images down to minibus 32), scored on "
            "the balanced vehicles6 test set by macro-F1; balanced-reference trains on as many images of "
            "the balanced set. The grid pins its own settings (32 px, 8 epochs, learning rate 0.05: "
            "train.py's defaults when it ran, now archived), the same for every row, so its rows compare "
            "with each other; its full table and per-class recall in "
            "[archive/balancing.md](archive/balancing.md).", "",
            *table(["row", "test macro-F1, TTA", "seeds", "against ce (plain cross-entropy)"],
                   against(rows, "ce") if "ce" in rows else []), ""]
    best = max((label for label in rows if label not in ("ce", "balanced-reference")),
               key=lambda label: rows[label][0], default=None)
    best_clause = (compare(rows[best], rows["ce"], best, "ce (plain cross-entropy)") if best and "ce" in rows
                   else "pending")
    answer = [f"Best, by test macro-F1: {best_clause}.", *in_words("balancing")]
    headline = (f"{best} {100 * (rows[best][0] - rows['ce'][0]):+.1f} points of macro-F1 over plain CE, "
                f"focal {100 * (rows['focal'][0] - rows['ce'][0]):+.1f}" if best and "focal" in rows
                else "pending")
    return section("4. Class balancing", "On a long-tailed training set, which balancing pays: a sampler, "
                   "loss weights, focal loss, over- or undersampling, logit adjustment?", [command],
                   body, answer), headline


def errors_section(reports):
    rows = report_table(reports / "errorloop.md", "macro-F1, TTA")
    commands = ["python experiments.py schedules --data ../shared/data/vehicles6-lt --rows onecycle "
                "--seeds 3",
                "python predict.py --run runs/schedules/onecycle-s0 --split val --analysis",
                "python experiments.py errorloop --data ../shared/data/vehicles6-lt --seeds 3"]
    body = [f"What a model gets wrong: the worst validation mistakes of a pretrained model of section 3 "
            f"({ERRORS_RUN}), each under the Grad-CAM map of the class it predicted (where it looked); "
            "the full error analysis (confusion matrices, most-confused pairs, errors grouped by cause) in "
            "[task/errors/val_analysis.md](task/errors/val_analysis.md):", "",
            *figure(reports, "task/errors/val_worst_errors.png", "worst validation errors with Grad-CAM",
                    f"python predict.py --run {ERRORS_RUN} --split val --tta 8 --analysis "
                    "--out reports/task/errors", LICENCE),
            "Fixing what the analysis shows ([errorloop.md](errorloop.md)): each small CNN trained on the "
            "long-tailed vehicles6-lt is fine-tuned for 3 more epochs at a tenth of the learning rate, "
            "with nothing changed (control), drawing its highest-loss training images 4x as often "
            "(hard-examples, `--init RUN --hard-fraction 0.2`), or oversampling / heavily augmenting the "
            "two classes its validation analysis confuses most; scored on the balanced vehicles6 test set.",
            "", *table(["row", "test macro-F1, TTA", "seeds", "against control"],
                       against(rows, "control") if "control" in rows else []), ""]
    answer = ["Fine-tuning on hard examples, by test macro-F1: "
              + compare(rows.get("hard-examples"), rows.get("control"), "hard-examples", "control") + ".",
              *in_words("errorloop")]
    headline = ("fine-tuning on them "
                f"{100 * (rows['hard-examples'][0] - rows['control'][0]):+.1f} points of macro-F1 over 3 "
                "plain epochs" if {"hard-examples", "control"} <= set(rows) else "pending")
    return section("5. Error analysis and hard examples",
                   "What does the model get wrong, and does fine-tuning on what it gets wrong fix it?",
                   commands, body, answer), headline


def generator_section(reports):
    rows = {label: runs for label, runs in grid_rows(reports, "synthetic-lite0").items() if runs}
    command = "python experiments.py synthetic-lite0 --data ../shared/data/vehicles6 --seeds 3"
    cells = [[label, seeds_cell(runs), mean_std(values(runs, "acc")), mean_std(values(runs, "acc_tta"))]
             for label, runs in rows.items()]
    f1 = {label: values(runs, "acc_tta") for label, runs in rows.items()}
    body = ["efficientnet_lite0 at its defaults with the conditional DCGAN's 64 px images added "
            "(syn RATIO: that many generated images per real one) or alone (cas: the Classification "
            "Accuracy Score), on all of vehicles6 (full) and on 10% of it (low); FD and the GANs' "
            "settings in [synthetic-lite0.md](synthetic-lite0.md).", "",
            *table(["row", "seeds", "test acc", "test acc, TTA 8"], cells), "",
            *figure(reports, "../docs/gan_samples_vehicles6_64px.png", "generated samples, a row per class",
                    "python gan.py sample --run runs/gan-v6-64 --grid docs/gan_samples_vehicles6_64px.png")]
    cas = "; ".join(f"{label} {np.mean(values(rows[label], 'acc_tta')):.4f}"
                    for label in ("low-cas", "full-cas") if label in rows)
    answer = ("Full data: " + compare(f1.get("full-syn0.25"), f1.get("full-real"),
                                      "with synthetic", "real only")
              + "; 10% data: " + compare(f1.get("low-syn0.25"), f1.get("low-real"),
                                         "with synthetic", "real only")
              + f". Trained on generated images alone (CAS, test accuracy with TTA): {cas or 'pending'}, "
              f"against 1 in {len(next(iter(rows.values()))[0]['recall_tta']) if rows else '?'} by chance.")
    answer = [answer, *in_words("synthetic-lite0")]
    gains = [f"{arm} {100 * (np.mean(f1[f'{arm}-syn0.25']) - np.mean(f1[f'{arm}-real'])):+.2f} points"
             for arm in ("full", "low") if f"{arm}-syn0.25" in f1 and f"{arm}-real" in f1]
    headline = "added to the real images: " + (", ".join(gains) or "pending") + " of test accuracy"
    return section("6. The conditional generator",
                   "Does a class-conditional GAN's output help the classifier?",
                   ["python gan.py --data ../shared/data/vehicles6 --img-size 64 --epochs 120 --name v6-64",
                    command], body, answer), headline


def leaderboard_section(reports):
    boards = {name: load_json(reports / f"leaderboard-{name}.json") for name in ("vehicles6", "trashnet6")}
    boards = {name: board for name, board in boards.items() if board}
    labels = list(dict.fromkeys(label for board in boards.values() for label in board))

    def cell(entry):
        if entry is None:
            return ""
        first = lambda v: v[0] if isinstance(v, list) else v  # a single fold's mean over folds
        return " / ".join(f"{first(entry[key]):.4f}" for key in ("cv", "public", "private"))

    cells = [[label, *(cell(board.get(label)) for board in boards.values())] for label in labels]
    body = ["efficientnet_lite0 at the defaults (`--pretrained --aug heavy`), 5 leak-free "
            "folds; CV is the out-of-fold accuracy on train/, Public and Private the "
            "halves of the test set ([leaderboard-vehicles6.md](leaderboard-vehicles6.md), "
            "[leaderboard-trashnet6.md](leaderboard-trashnet6.md)).",
            "", *table(["row", *(f"{name}: CV / Public / Private" for name in boards)], cells), ""]
    answers = []
    for name, board in boards.items():
        private = {label: entry["private"][0] if isinstance(entry["private"], list) else entry["private"]
                   for label, entry in board.items()}
        best = max(private, key=private.get)
        answers.append(f"{name} Private {private[labels[0]]:.4f} ({labels[0].split(' (')[0]}) to "
                       f"{private[best]:.4f} ({best.split(' (')[0]})")
    answer = ("; ".join(answers) or "pending") + (
        ". Each row is reproduced by `python bench/leaderboard.py ../shared/data/NAME` "
        "(its docstring lists each row's commands).")
    return section("7. The leaderboard and the submission",
                   "How far do folds, ensembling, TTA, stacking and pseudo-labels climb on the test set's "
                   "public and private halves?",
                   ["python bench/leaderboard.py ../shared/data/vehicles6"],
                   body, answer), "; ".join(answers) or "pending"


def write_task_report(reports):
    """reports/task.md; returns its path and one headline per section (title, anchor, headline)."""
    main_rows = grid_rows(reports, MAIN_GRID)
    sections = [data_section(reports), augmentation_section(reports, main_rows),
                training_section(reports, main_rows), balancing_section(reports), errors_section(reports),
                generator_section(reports), leaderboard_section(reports)]
    lines = ["# The task, step by step", "",
             "Written by `python report.py` from the records in reports/ alone; every number below "
             "comes from a record, every figure names the command that makes it. The studies behind "
             "each step, with their full tables: [README.md](README.md).", ""]
    headlines = []
    for body, headline in sections:
        lines += body
        title = body[0].removeprefix("## ")
        headlines.append((title, re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-"), headline))
    out = reports / "task.md"
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out, headlines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", default=str(ROOT / "reports"),
                   help="the folder of records, where task.md goes")
    args = p.parse_args(argv)
    out, headlines = write_task_report(Path(args.reports))
    # the README's list is of the project's own
    if Path(args.reports).resolve() == (ROOT / "reports").resolve():
        replace_in_readme("task",
                          [f"{i}. [{title.split('. ', 1)[1]}](reports/task.md#{anchor}): {headline}."
                           for i, (title, anchor, headline) in enumerate(headlines, 1)])
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
