"""Run a named grid of train.py + predict.py configurations over seeds and write a comparison report.

Usage:
    python experiments.py transfer --data ../shared/data/vehicles6 --seeds 3   # the grid's CPU settings
    python experiments.py upscaling --data ../shared/data/vehicles6 --full       # its GPU settings
    python experiments.py architectures --data DIR --rows smallcnn,lite0        # run some rows, report all
    python experiments.py mygrid --grids my_grids.json                          # grids from another file
    python experiments.py recipe --full --seeds 8 --report    # rewrite the report from finished runs only
    python experiments.py recipe --full --findings            # rewrite only its findings, from grids.json
    python experiments.py recipe --full --seeds 8 --jobs 8    # 8 runs at once on one big GPU

Grids are plain data in grids.json (name -> {"description", "prepare": [shell commands that make
what the rows need, shown in the report], "cpu": [train.py args], "full": [args for a GPU], "tta":
views, "predict": [predict.py args], "findings": [paragraphs: what the study found, naming rows
rather than repeating the table's numbers], "rows": {label: [args] or {"args", "note", "fallback",
"predict", "reuse"}}}): a run gets --data DIR, the grid's args, then the row's, which
override them (--data too; {seed} in a row's args becomes the run's seed: --init runs/GRID/base-s{seed}
fine-tunes each seed's own run of an earlier row); predict.py gets the grid's and the row's "predict"
args (e.g. --data of another folder to score on, --logit-adjust). A row that fails with a one-line
error (weights that cannot download, data not made yet) is reported, and its fallback runs. A row
with "reuse": LABEL trains nothing: it predicts, with its own predict args, from a copy of row
LABEL's trained runs.
Optional "baseline" and "reference" (row labels) add a column: the share of the macro-F1 gap
between them that each row closes.

Each (row, seed) is runs/GRID/ROW-sSEED (runs/GRID-full/ with --full), finished once predict.py
wrote test_metrics.json there: the same command again skips finished runs and resumes the others.
Writes reports/GRID.md (command, settings, hardware; per row the mean ± std over seeds of the validation
accuracy at the epoch best.pt keeps by --monitor (choose rows by it: the test scores are for reporting),
test accuracy without and with TTA, macro-F1, that epoch, seconds per epoch), the grid's findings under
"## Findings", a per-class recall table, reports/GRID_val_curves.png and reports/GRID_bars.png. --findings
rewrites only that section of an existing report (reports/GRID-full.md with --full) from the grids file and
needs no runs: findings are revised after the runs are gone, and the rest of the report stays
as the runs made it.
reports/GRID.json records every finished run's train.py and predict.py arguments and scores: the raw
figures behind the means, which stand in for a run folder deleted since (rows can be added and the
report rewritten later) as long as the grid still asks for exactly those arguments. Such a run is not
trained again either: on a fresh clone, `--seeds 3` after `--seeds 2` trains only the third seed (delete
a run's entry there to train it again).
"""
import argparse
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import predict
import train
from data import resolve_data_dir
from utils import RUNS_DIR, UserError, pyplot, read_csv, run_cli

GRIDS_FILE = Path(__file__).resolve().parent / "grids.json"
REPORTS_DIR = Path("reports")
ROW_LABEL = re.compile(r"[A-Za-z0-9_.+-]+")  # it becomes part of a folder name
WHERE_IT_RUNS = {"workers", "device", "resume"}  # train.py settings that do not change what a run computes
FINDINGS_HEADING = "## Findings"
RECALL_INTRO = "Per-class recall with TTA"  # the line after the findings: where --findings puts them


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", help="a grid name from the grids file")
    p.add_argument("--data", help="competition folder (default: as train.py: ./data, else the built-in set)")
    p.add_argument("--seeds", type=int, default=3, help="run seeds 0 .. N-1 of every row")
    p.add_argument("--full", action="store_true",
                   help="the grid's full (GPU) settings instead of its cpu ones")
    p.add_argument("--rows", help="comma-separated row labels to run (default: all)")
    p.add_argument("--grids", default=str(GRIDS_FILE), help="JSON file of grids (default: grids.json)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--report", action="store_true",
                      help="only write the report from the runs finished so far")
    only.add_argument("--findings", action="store_true",
                      help="only rewrite the findings of the existing report from the grids file "
                           "(no runs needed)")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds of a row trained at once, each in its own process "
                        "(a small model leaves a big GPU idle)")
    p.add_argument("--workers", help="loader workers for train.py and predict.py (default: theirs)")
    p.add_argument("--device", help="device for train.py and predict.py (default: auto)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    return args


def load_grid(path, name, only_rows):
    """The grid, all its rows as {label: {"args": [str], "note"?, "fallback"?: [str]}},
    and the labels to run."""
    try:
        grids = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"grids file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    grids = grids if isinstance(grids, dict) else {}
    if name not in grids:
        raise UserError(f"unknown grid {name!r} in {path}: choose from {', '.join(grids) or '(none)'}")
    rows = {label: row if isinstance(row, dict) else {"args": row}
            for label, row in grids[name].get("rows", {}).items()}
    for i, row in enumerate(rows.values()):
        if "reuse" in row:  # it trains exactly what the reused row, listed before it, trains
            row["args"] = rows[row["reuse"]].get("args") if row["reuse"] in list(rows)[:i] else None
    for key, items in (("prepare", "shell commands"), ("findings", "paragraphs")):
        value = grids[name].get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UserError(f"grid {name!r} in {path}: \"{key}\" is a list of {items}")
    if not rows or not all(ROW_LABEL.fullmatch(label) and isinstance(row.get("args"), list)
                           and all(isinstance(row.get(key, []), list) for key in ("fallback", "predict"))
                           for label, row in rows.items()):
        raise UserError(f"grid {name!r} in {path} needs rows: {{label of letters, digits, _.+-: "
                        f"[train.py args]}} (a \"reuse\" row names a row listed before it)")
    wanted = only_rows.split(",") if only_rows else list(rows)
    if set(wanted) - set(rows):
        raise UserError(f"--rows: grid {name!r} has no row {', '.join(sorted(set(wanted) - set(rows)))}; "
                        f"it has {', '.join(rows)}")
    for label in list(wanted):  # a reuse row needs the runs of the row it reuses
        if "reuse" in rows[label] and rows[label]["reuse"] not in wanted:
            wanted.insert(wanted.index(label), rows[label]["reuse"])
    for row in rows.values():  # JSON numbers are allowed in args: argv is strings
        row.update({key: [str(a) for a in row[key]] for key in ("args", "fallback", "predict") if key in row})
    return grids[name], rows, set(wanted)


def check_train_args(where, argv):
    """Fail in seconds, not hours in, when a row's arguments are not train.py's
    (a typo, an option it lacks)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            train.parse_args(argv)
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise UserError(f"{where}: train.py rejects {shlex.join(argv)}: {message}") from None


def check_scored(data, predict_args):
    """The report needs test labels: a labeled test/ or a solution.csv, where predict.py looks."""
    data = predict.parse_args(predict_args).data or data
    test = Path(data) / "test"
    labeled = test.is_dir() and (any(p.is_dir() for p in test.iterdir())
                                 or (Path(data) / "test.csv").is_file())
    if not labeled and not (Path(data) / "solution.csv").is_file():
        raise UserError(f"{data} has no labeled test/ and no solution.csv: a grid needs test scores")


def check_same_settings(run_dir, argv):
    """A finished run is reused only if the grid still asks for its settings (grids.json may have changed).
    A setting the grid leaves to train.py to derive from the data (None here) is whatever the run derived."""
    intended = vars(train.resolve_settings(train.parse_args(argv))[0])  # with the model kind's defaults
    intended["data"] = str(Path(intended["data"]))  # as train.py records it
    saved = json.loads((run_dir / "config.json").read_text())["args"]
    changed = sorted(k for k in intended if k not in WHERE_IT_RUNS and k in saved and intended[k] is not None
                     and saved[k] != intended[k])
    if changed:
        raise UserError(f"{run_dir} was run with another {', '.join(changed)} than the grid asks now: "
                        f"delete it to rerun, or use another grid name")


@dataclass
class Plan:
    """What every run of one invocation shares."""
    tag: str  # run folders go to runs/TAG/, the report to reports/TAG.md
    settings: list  # the grid's train.py args, after --data and before a row's own
    data: str
    seeds: list
    tta: int
    predict: list  # the grid's predict.py args
    where: list  # --workers/--device for both scripts
    jobs: int = 1  # runs at once (--jobs)

    def call(self, script, argv):
        """script.main(argv) here, or with several jobs the script in a process of its own (its one-line
        error raised here as a UserError, so a row can fall back)."""
        if self.jobs == 1:
            return script.main(argv)
        result = subprocess.run([sys.executable, script.__file__, *argv], capture_output=True, text=True)
        if result.returncode:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            if errors:
                raise UserError(errors[-1][len("error: "):])
            raise RuntimeError(f"{script.__name__}.py {shlex.join(argv)} failed:\n{result.stderr[-3000:]}")

    def runs(self, label, args):
        """(train.py argv, run folder) of every seed of a row."""
        names = [f"{self.tag}/{label}-s{seed}" for seed in self.seeds]  # train.py --name is under runs/
        return [(["--data", self.data, *self.settings, *[a.replace("{seed}", str(seed)) for a in args],
                  "--seed", str(seed), "--name", name], RUNS_DIR / name)
                for seed, name in zip(self.seeds, names)]


def fallback_label(label):
    """The runs of a row's fallback are runs/GRID/LABEL-fallback-sSEED."""
    return f"{label}-fallback"


def finished(run_dir):
    """predict.py writes test_metrics.json last: a run folder with it is done."""
    return (run_dir / "test_metrics.json").is_file()


def run_once(plan, argv, run_dir, predict_args, reused_dir=None):
    """Train (or continue) and predict one run unless it already finished. With --jobs 1 in this
    process, not a subprocess: no torch import per run (seconds on a CPU), and a UserError (weights
    that cannot download) is an exception to record; with more jobs, each run in processes of its own.
    A hard crash stops the grid; the same command resumes it. With reused_dir (a finished run of
    another row), the run is a copy of that one, predicted anew."""
    if finished(run_dir):
        return
    if not run_dir.exists() and in_record(load_record(plan.tag), run_dir.name,
                                          asked(plan, argv, predict_args)):
        print(f"{run_dir}: not run again: its folder is gone, its scores are in {record_path(plan.tag)}")
        return
    if reused_dir is not None:
        if not finished(reused_dir):
            raise UserError(f"{reused_dir}, which this row reuses, is gone (only its scores are in "
                            f"{record_path(plan.tag)}): delete its entry there to train it again")
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "log.csv", "split.csv", "best.pt"):
            shutil.copy2(reused_dir / name, run_dir / name)
    elif (run_dir / "last.pt").is_file():
        # returns at once when all its epochs are done
        plan.call(train, ["--resume", str(run_dir)] + plan.where)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first epoch: nothing to keep
        try:
            plan.call(train, argv + plan.where)
        except UserError:
            shutil.rmtree(run_dir, ignore_errors=True)  # train.py made the folder before the error
            raise
    plan.call(predict, ["--run", str(run_dir), "--tta", str(plan.tta), *plan.predict, *predict_args,
                        *plan.where])


def planned(plan, label, row):
    """What the report shows for a row before it runs, or when --rows leaves it out: its settings and the
    runs finished earlier (its fallback's, when only those finished)."""
    result = {"label": label, "args": row["args"], "note": row.get("note", ""), "error": None,
              "fallback": None, "predict": row.get("predict", []), "reuse": row.get("reuse"),
              "runs": [run_dir for _, run_dir in plan.runs(label, row["args"])]}
    if "fallback" in row and not any(map(finished, result["runs"])):
        fallback_runs = [run_dir for _, run_dir in plan.runs(fallback_label(label), row["fallback"])]
        if any(map(finished, fallback_runs)):
            result.update(error="an earlier run of the grid could not run it", fallback=row["fallback"],
                          runs=fallback_runs)
    return result


def run_row(plan, label, row, done_rows):
    """Every seed of a row, or of its fallback once the row fails with a one-line error."""
    result = planned(plan, label, row)
    try:
        reused = done_rows[row["reuse"]]["runs"] if "reuse" in row else [None] * len(plan.seeds)
        if not reused:
            raise UserError(f"row {row['reuse']!r}, which it reuses, has no runs")
        runs = [(plan, argv, run_dir, row.get("predict", []), reused_dir)
                for (argv, run_dir), reused_dir in zip(plan.runs(label, row["args"]), reused)]
        if plan.jobs == 1:
            for run in runs:
                run_once(*run)
        else:
            # --jobs: the seeds side by side, each in its own processes
            with ThreadPoolExecutor(plan.jobs) as pool:
                for done in [pool.submit(run_once, *run) for run in runs]:
                    done.result()  # a UserError of any seed: the row's fallback
        return result
    except UserError as e:
        print(f"{plan.tag} row {label}: not run: {e}")
        result.update(error=str(e), runs=[])
    if "fallback" in row:
        done = run_row(plan, fallback_label(label),
                       {"args": row["fallback"], "predict": row.get("predict", [])}, done_rows)
        result.update(fallback=row["fallback"], runs=done["runs"])
        result["error"] += f"; the fallback failed too: {done['error']}" if done["error"] else ""
    return result


def run_summary(run_dir):
    """Test scores from predict.py's metrics; the kept epoch, its validation accuracy and the time per epoch
    from train.py's log."""
    metrics, log = json.loads((run_dir / "test_metrics.json").read_text()), read_csv(run_dir / "log.csv")
    config = json.loads((run_dir / "config.json").read_text())
    env, kept = config["environment"], kept_row(log, config["args"]["monitor"])
    cpu = f" ({env['torch_threads']} torch threads)" if "torch_threads" in env else ""
    if env.get("cpu_model"):  # runs made before config.json recorded the CPU lack it
        cpu += f", {env['cpu_model']} ({' '.join([env['cpu_capability'], *env['cpu_flags']])})"
    val_acc = [float(r["val_acc"]) for r in log]
    return {"acc": metrics["acc"], "acc_tta": metrics["acc_tta"], "f1_tta": metrics["macro_f1_tta"],
            "recall_tta": metrics["recall_tta"],
            "kept_val_acc": float(kept["val_acc"]), "kept_epoch": int(kept["epoch"]),
            "seconds": float(np.mean([float(r["seconds"]) for r in log])), "val_acc": val_acc,
            "hardware": f"{env['cpu_count']} CPU cores{cpu}, {env['gpu'] or 'no GPU'}, torch {env['torch']}"}


def kept_row(log, monitor):
    """The log.csv row of the epoch whose weights best.pt holds, the model predict.py scores: train.py's
    own EarlyStopping replayed on the log (with --monitor val_loss that is not the epoch of best val_acc)."""
    stopper, kept = train.EarlyStopping(monitor, patience=len(log)), None
    for row in log:
        metrics = {k: float(row[k]) for k in ("val_loss", "val_acc", "val_f1")} if row.get("val_loss") else {}
        kept = row if stopper.update(metrics) else kept
    return kept


def record_path(tag):
    return REPORTS_DIR / f"{tag}.json"


def load_record(tag):
    path = record_path(tag)
    return json.loads(path.read_text()) if path.is_file() else {}


def asked(plan, argv, predict_args):
    """A run's arguments as its record keeps them: train.py's, and predict.py's without --run, --workers
    and --device, which do not change its scores."""
    return {"train": argv, "predict": ["--tta", str(plan.tta), *plan.predict, *predict_args]}


def in_record(record, name, arguments):
    """Whether run `name` was recorded with exactly these arguments:
    then its scores stand in for its folder."""
    entry = record.get(name)
    return entry is not None and {key: entry[key] for key in arguments} == arguments


def row_summaries(plan, result, record):
    """The scores of every finished run of a row: from its folder (recorded again in `record`), else
    from the record of a folder deleted since, if that run had exactly the arguments the grid asks now."""
    label, args = (fallback_label(result["label"]), result["fallback"]) if result["fallback"] is not None \
        else (result["label"], result["args"])
    summaries = []
    for argv, run_dir in plan.runs(label, args) if result["runs"] else []:
        arguments = asked(plan, argv, result["predict"])
        if finished(run_dir):
            record[run_dir.name] = {**arguments, "summary": run_summary(run_dir)}
        if in_record(record, run_dir.name, arguments):
            summaries.append(record[run_dir.name]["summary"])
    return summaries


def mean_std(values, digits=4):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"  # sample std over seeds


def plot_report(finished, tag):
    """Mean validation accuracy per epoch of each row; test accuracy with TTA as bars, std as error bars."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(REPORTS_DIR / name, dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, runs in finished.items():
        epochs = min(len(r["val_acc"]) for r in runs)  # a seed that stopped early ends the mean curve
        ax.plot(range(1, epochs + 1), np.mean([r["val_acc"][:epochs] for r in runs], 0), marker="o",
                label=label)
    ax.set(xlabel="epoch", ylabel="val_acc (mean over seeds)", title=f"{tag}: validation accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if finished:  # no row finished yet: an empty plot, no legend
        ax.legend(fontsize=8)
    save(fig, f"{tag}_val_curves.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(finished) + 1.5), sharey=True)
    for ax, key, name in zip(axes, ("acc_tta", "f1_tta"), ("test accuracy", "test macro-F1")):
        values = [[r[key] for r in runs] for runs in finished.values()]
        ax.barh(list(finished), [np.mean(v) for v in values],
                xerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values], capsize=4)
        ax.set(xlim=(max(0.0, min(map(min, values), default=0) - 0.05), 1), xlabel=f"{name} with TTA",
               title=f"{tag}: mean ± std over seeds")
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()  # rows in grid order from the top
    save(fig, f"{tag}_bars.png")


def findings_lines(grid):
    """The report's findings section, each paragraph followed by a blank line; none without findings."""
    findings = grid.get("findings", [])
    return [FINDINGS_HEADING, "", *(line for paragraph in findings
                                    for line in (paragraph, ""))] if findings else []


def refresh_findings(tag, grid):
    """Replace the findings of reports/TAG.md, or put them before its per-class recall, leaving every other
    line as it is: the table came from runs that may no longer exist."""
    path = REPORTS_DIR / f"{tag}.md"
    if not path.is_file():
        raise UserError(f"{path} not found: --findings rewrites a report the grid has written "
                        f"(reports/GRID-full.md with --full)")
    # split, not splitlines: joined again, the file is unchanged elsewhere
    lines = path.read_text().split("\n")
    end = next((i for i, line in enumerate(lines) if line.startswith(RECALL_INTRO)), None)
    if end is None:
        raise UserError(f"{path} has no line starting {RECALL_INTRO!r}: "
                        "not a report written by experiments.py")
    start = lines.index(FINDINGS_HEADING) if FINDINGS_HEADING in lines[:end] else end
    lines[start:end] = findings_lines(grid)
    path.write_text("\n".join(lines))


def write_report(plan, grid, results, command):
    """reports/TAG.md from whatever runs have finished so far (or were recorded in reports/TAG.json when
    they did), its two plots, and the record brought up to date."""
    titles = [f"{r['label']} (fallback)" if r["fallback"] is not None else r["label"] for r in results]
    path, record = record_path(plan.tag), load_record(plan.tag)
    done = {title: row_summaries(plan, r, record) for title, r in zip(titles, results)}
    done = {title: runs for title, runs in done.items() if runs}
    n_seeds = len(plan.seeds)
    f1 = {title: np.mean([s["f1_tta"] for s in runs]) for title, runs in done.items()}
    base, ref = grid.get("baseline"), grid.get("reference")
    gap = f1[ref] - f1[base] if base in f1 and ref in f1 else None
    prepare = ["First make what the rows need:", "", "```bash", *grid.get("prepare", []), "```", ""]
    prepare = prepare if grid.get("prepare") else []
    where = "; ".join(dict.fromkeys(s["hardware"] for runs in done.values()
                                    for s in runs)) or "no finished runs yet"
    lines = [f"# Grid `{plan.tag}`", "", grid.get("description", ""), "", *prepare, "Reproduce with:", "",
             "```bash", command, "```", "",
             f"- train.py arguments of every row, before its own: `{shlex.join(plan.settings)}`",
             f"- predict.py `--tta {plan.tta}{' ' + shlex.join(plan.predict) if plan.predict else ''}`; "
             f"seeds {', '.join(map(str, plan.seeds))}; mean ± sample std over seeds",
             f"- hardware of the runs: {where}",
             f"- every run's arguments and scores: [{path.name}]({path.name})",
             "",
             "",
             f"| row | seeds done | val acc, kept epoch | test acc | test acc, TTA {plan.tta} "
             "| macro-F1, TTA | kept epoch | s / epoch |"
             + (f" share of the macro-F1 gap {base} → {ref} closed |" if gap is not None else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if gap is not None else "")]
    recorded_before_kept = False  # any run recorded before summaries held the kept epoch
    for title, r in zip(titles, results):
        runs = done.get(title)
        if not runs:
            lines.append(f"| {title} | 0/{n_seeds} | {'not run' if r['error'] else 'pending'} | | | | | |"
                         + (" |" if gap is not None else ""))
            continue
        old = any("kept_epoch" not in s for s in runs)
        val, epoch = ("best_val_acc", "best_epoch") if old else ("kept_val_acc", "kept_epoch")
        cells = [mean_std([s[k] for s in runs]) for k in (val, "acc", "acc_tta", "f1_tta")]
        cells += [mean_std([s[k] for s in runs], 1) for k in (epoch, "seconds")]
        if old:
            cells[0], cells[4] = cells[0] + "*", cells[4] + "*"
            recorded_before_kept = True
        if gap is not None:
            cells.append(f"{(f1[title] - f1[base]) / gap:.2f}" if gap else "no gap")
        lines.append(f"| {title} | {len(runs)}/{n_seeds} | " + " | ".join(cells) + " |")
    if recorded_before_kept:
        lines += ["", "\\* the best validation accuracy over all epochs and that epoch, not the kept one: "
                  "these runs were recorded before the report read the epoch that best.pt keeps"]
    classes = list(next(iter(done.values()))[0]["recall_tta"]) if done else []
    lines += ["", *findings_lines(grid), f"{RECALL_INTRO} {plan.tta} (mean ± std over seeds):", "",
              "| row | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for title, runs in done.items():
        lines.append(f"| {title} | "
                     + " | ".join(mean_std([s["recall_tta"][c] for s in runs], 3) for c in classes) + " |")
    lines += ["", "Rows (train.py arguments after the shared ones; "
              "predict.py arguments after the grid's):", ""]
    for r in results:
        line = f"- **{r['label']}**: " + (f"`{shlex.join(r['args'])}`" if r["args"] else "(none)")
        line += f" (the runs of row {r['reuse']}, predicted anew)" if r["reuse"] else ""
        line += f"; predict.py `{shlex.join(r['predict'])}`" if r["predict"] else ""
        line += f". {r['note']}" if r["note"] else ""
        if r["error"]:
            line += f". **Not run**: {r['error']}"
        if r["fallback"] is not None:
            line += (f". **Shown instead** (runs {fallback_label(r['label'])}-s*): "
                     f"`{shlex.join(r['fallback'])}`")
        lines.append(line)
    lines += ["", f"![validation curves]({plan.tag}_val_curves.png)", "",
              f"![test accuracy]({plan.tag}_bars.png)"]
    REPORTS_DIR.mkdir(exist_ok=True)
    (REPORTS_DIR / f"{plan.tag}.md").write_text("\n".join(lines) + "\n")
    path.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
    plot_report(done, plan.tag)


def grid_command(argv):
    """The arguments that run the whole grid, as the report shows every row: without --report, and without
    --rows, which picked only the rows this command trains."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value or arg == "--report" or arg.startswith("--rows="):
            skip_value = False
        elif arg == "--rows":
            skip_value = True
        else:
            kept.append(arg)
    return kept


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    grid, rows, wanted = load_grid(args.grids, args.grid, args.rows)
    tag = f"{args.grid}-full" if args.full else args.grid  # CPU and GPU settings never share run folders
    if args.findings:  # before the data and the runs, which it does not need
        refresh_findings(tag, grid)
        print(f"rewrote the findings of {REPORTS_DIR / tag}.md")
        return
    data = str(resolve_data_dir(args.data))
    check_scored(data, [str(a) for a in grid.get("predict", [])])
    where = ((["--workers", args.workers] if args.workers else [])
             + (["--device", args.device] if args.device else []))
    plan = Plan(tag, [str(a) for a in grid.get("full" if args.full else "cpu", [])], data,
                list(range(args.seeds)), int(grid.get("tta", 1)), [str(a) for a in grid.get("predict", [])],
                where, args.jobs)
    for label in wanted:  # every problem that can be found before the first run starts
        row = rows[label]
        for folder_label, key in ((label, "args"), (fallback_label(label), "fallback")):
            for run_argv, run_dir in plan.runs(folder_label, row[key]) if key in row else []:
                check_train_args(f"grid {args.grid!r}, row {label!r}", run_argv)
                if (run_dir / "last.pt").is_file():
                    check_same_settings(run_dir, run_argv)
    command = "python experiments.py " + shlex.join(grid_command(argv))
    results = [planned(plan, label, row) for label, row in rows.items()]
    if args.report:
        write_report(plan, grid, results, command)
        print(f"wrote {REPORTS_DIR / plan.tag}.md from the finished runs")
        return
    for i, (label, row) in enumerate(rows.items()):  # the report shows every row; --rows picks those to run
        if label in wanted:
            results[i] = run_row(plan, label, row, dict(zip(rows, results)))
            write_report(plan, grid, results, command)  # progress is readable while the grid runs
    print(f"wrote {REPORTS_DIR / plan.tag}.md, {plan.tag}_val_curves.png and {plan.tag}_bars.png")


if __name__ == "__main__":
    run_cli(main, "interrupted: finished runs are kept; the same command resumes the grid")
