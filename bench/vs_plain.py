"""The project's default commands against the plain scripts a user could write instead, side by side.

For every dataset, one process at a time on this machine (never two at once):
    pretrained  python ../shared/bench/plain_finetune.py D 160 6
                against python train.py --pretrained --aug heavy --data D, then python predict.py --tta 8
    scratch     python ../shared/bench/plain_scratch.py D 64 10
                against python train.py --data D, then python predict.py --tta 8
The reference's score is its last epoch's test accuracy; ours is predict.py's, with and without the
test-time views. Times are wall-clock seconds of each training process, start-up included. With
--seeds N both sides run N times, seeds 0..N-1 (ours with --seed S, the reference with its
torch.manual_seed offset by S, the script itself unchanged), interleaved: the reference first on even
seeds, ours first on odd ones; the table shows mean ± std. Each side's accuracy after every epoch
against its training seconds (the plain script's test accuracy, our validation accuracy) goes into a
time-to-accuracy figure per set, reports/vs_plain/SET.png.

Usage:
    python bench/vs_plain.py                                   # every set below, both kinds
    python bench/vs_plain.py --sets trashnet6 --kinds pretrained
    python bench/vs_plain.py --kinds scratch --reuse-reference # ours again, the references as before
    python bench/vs_plain.py --sets utilityvehicles10 --kinds scratch --seeds 3
    python bench/vs_plain.py --sets trashnet6 --kinds pretrained --seeds 2 --first-seed 1  # add seed 1
    python bench/vs_plain.py --report                          # rewrite the report from the results
    python bench/vs_plain.py --sets trashnet6 --kinds pretrained --seeds 3 --repredict s160f2e6p128
    python bench/vs_plain.py --kinds pretrained --reuse-reference --recipe "p128=--progressive 128"
    python bench/vs_plain.py --kinds pretrained --reuse-reference --seeds 4 --recipe "all=--val-fraction 0"

--recipe NAME=ARGS measures a candidate recipe: ours with ARGS after the default command, recorded
under NAME beside the default rows (with --reuse-reference, against the default row's reference run).
Candidates go to a table of their own, with the validation accuracy of the epoch best.pt kept: the
default changes on validation, and only then does the main table (and the README) see it. Where no
recipe reaches on a set, the report's last table says what bounds it: how many of our epochs at the plain
script's input size fit in half its time, how the closest recipe's gap compares with seed noise, and what
the validation split costs (the recipe "all=--val-fraction 0": every image trained on, as the plain
scripts do).

Results accumulate in reports/vs_plain.json, a row per set, kind and seed (a rerun replaces its rows;
run folders in runs/vs_plain/); the table goes to reports/vs_plain.md, and its main columns to the
README (between its vs_plain markers).
"""
import argparse
import csv
import itertools
import json
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from readme_table import replace_in_readme

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from choices import VAL_FRACTION  # noqa: E402
from utils import pyplot  # noqa: E402

SHARED = ROOT.parent / "shared"
SETS = {"vehicles6": SHARED / "data" / "vehicles6",
        "utilityvehicles10": SHARED / "data" / "utilityvehicles10",
        "trashnet6": SHARED / "data" / "trashnet6", "digits": ROOT / "builtin_data" / "digits"}
SHARED_SETS = [name for name, folder in SETS.items() if SHARED in folder.parents]  # what a default must pass
KINDS = {"pretrained": (["plain_finetune.py", "160", "6"], ["--pretrained", "--aug", "heavy"]),
         "scratch": (["plain_scratch.py", "64", "10"], [])}
OUT = ROOT / "runs" / "vs_plain"
# Runs a reference script with its torch.manual_seed(0) offset by a seed: the script stays as written.
SEEDED = ("import runpy, sys, torch; from pathlib import Path; manual_seed = torch.manual_seed; "
          "torch.manual_seed = lambda s: manual_seed(s + {seed}); sys.argv = sys.argv[1:]; "
          "sys.path.insert(0, str(Path(sys.argv[0]).parent)); "
          "runpy.run_path(sys.argv[0], run_name='__main__')")
REPORT = ROOT / "reports" / "vs_plain.md"
# The recipe arguments that train on every training image, as the plain scripts do: what the validation
# split costs (bound_table).
EVERY_IMAGE = "--val-fraction 0"
PLOTS = ROOT / "reports" / "vs_plain"  # a time-to-accuracy figure per set
RESULTS = ROOT / "reports" / "vs_plain.json"  # committed: the report is rebuilt from it


def timed(command, log):
    """Run command, its output into log; (wall seconds, output)."""
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    log.write_text(result.stdout + result.stderr)
    if result.returncode:
        sys.exit(f"error: {' '.join(map(str, command))} failed; see {log}")
    return seconds, result.stdout


def compare(name, kind, seed=0, earlier=None, recipe=None):
    """One row: the reference script and ours with one seed, interleaved: the reference first on even
    seeds and ours first on odd ones, so that a machine slowing down or speeding up over a session
    weighs on both sides alike. earlier: this row's stored result, whose reference figures are kept
    instead of running the reference again (--reuse-reference). recipe: (name, extra arguments of ours)."""
    data = SETS[name]
    if name == "digits" and not data.is_dir():  # the built-in set is written on first use
        subprocess.run([sys.executable, "-c", "import data; data.resolve_data_dir(None)"],
                       cwd=ROOT, check=True)
    recipe_name, extra = recipe or (None, [])
    tag = run_tag(name, kind, seed, recipe_name)
    sides = [lambda: run_reference(data, kind, seed, tag, earlier),
             lambda: run_ours(data, kind, seed, tag, extra)]
    first, second = (sides if seed % 2 == 0 else sides[::-1])
    row = {"set": name, "kind": kind, "seed": seed, "reference": " ".join(KINDS[kind][0]),
           "order": "reference first" if seed % 2 == 0 else "ours first"}
    if recipe_name:
        row.update(recipe_name=recipe_name, recipe_args=" ".join(extra))
    row.update(first())
    row.update(second())
    return row


def run_tag(name, kind, seed, recipe_name=None):
    """'vehicles6-pretrained-NAME-s1': the run folder's name under runs/vs_plain/ and its logs'."""
    return f"{name}-{kind}" + (f"-{recipe_name}" if recipe_name else "") + (f"-s{seed}" if seed else "")


def run_reference(data, kind, seed, tag, earlier=None):
    """The plain script: its wall seconds, last epoch's test accuracy and its curve (reference_curve)."""
    if earlier:
        return {key: earlier.get(key) for key in ("reference_acc", "reference_seconds", "reference_when",
                                                  "reference_curve")}
    when = time.strftime("%Y-%m-%d %H:%M")
    reference = KINDS[kind][0]
    script = [str(SHARED / "bench" / reference[0]), str(data), *reference[1:]]
    seconds, out = timed([sys.executable, *(["-c", SEEDED.format(seed=seed)] if seed else []), *script],
                         OUT / f"{tag}-reference.log")
    curve = reference_curve(out)
    return {"reference_acc": curve[-1][1], "reference_seconds": round(seconds), "reference_when": when,
            "reference_curve": curve}


def run_ours(data, kind, seed, tag, extra=()):
    """train.py (the default command, then extra) and predict.py --tta 8: wall seconds of each, test
    accuracy without and with the views, and, where the run held images out for validation (not with
    --val-fraction 0), the training curve (our_curve) and the validation accuracy of the epoch best.pt
    kept."""
    from experiments import kept_row  # imports torch: only when ours runs
    run = OUT / tag
    shutil.rmtree(run, ignore_errors=True)  # train.py would otherwise pick a new name beside it
    when = time.strftime("%Y-%m-%d %H:%M")
    train_seconds, _ = timed([sys.executable, "train.py", "--data", data, "--name", f"vs_plain/{tag}",
                              *KINDS[kind][1], *(["--seed", str(seed)] if seed else []), *extra],
                             OUT / f"{tag}-train.log")
    saved = json.loads((run / "config.json").read_text())
    config, env = saved["args"], saved["environment"]
    with open(run / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    kept = kept_row(log, config["monitor"])
    validated = ({"kept_val_acc": float(kept["val_acc"]), "curve": our_curve(log)} if kept.get("val_acc")
                 else {})
    return {**predict_run(run, tag), **validated, "kept_epoch": int(kept["epoch"]),
            "train_seconds": round(train_seconds),
            "machine": f"{env.get('cpu_model') or platform.machine()} ({env.get('cpu_capability', '?')}), "
                       f"{config.get('workers')} loader worker(s)", "when": when}


def predict_run(run, tag):
    """predict.py --tta 8 on a trained run, at the test size train.py derives now (a run trained before
    --test-size existed would otherwise test at its input size): test accuracy without and with the
    views, their names, the seconds, and the recipe as config.json has it."""
    from augment import test_size  # imports torch: only when ours runs
    config = json.loads((run / "config.json").read_text())["args"]
    size = config.get("test_size") or test_size(config["img_size"], config["aug"])
    seconds, _ = timed([sys.executable, "predict.py", "--run", run, "--tta", "8", "--img-size", str(size)],
                       OUT / f"{tag}-predict.log")
    metrics = json.loads((run / "test_metrics.json").read_text())
    return {"acc": metrics["acc"], "acc_tta": metrics["acc_tta"], "tta_views": metrics["tta_view_names"],
            "predict_seconds": round(seconds),
            "recipe": f"{config['arch']}, {config['img_size']} px, {config['epochs']} epochs, "
                      f"batch {config['batch_size']}"
                      + (f", from {config['progressive']} px" if config.get("progressive") else "")
                      + (f", tested at {size} px" if size != config["img_size"] else "")}


def repredict(row):
    """The row with its prediction made again by predict.py as it is now, on the run folder its training
    left (runs/vs_plain/TAG): for a change to prediction alone, the training figures stay as measured."""
    name, kind, seed, recipe_name = key(row)
    tag = run_tag(name, kind, seed, recipe_name)
    if not (OUT / tag / "best.pt").is_file():
        raise SystemExit(f"{label(row)}: its run folder {OUT / tag} is gone; run it again instead")
    return {**row, **predict_run(OUT / tag, tag), "predicted_when": time.strftime("%Y-%m-%d %H:%M")}


def reference_curve(output):
    """[(seconds, test accuracy)] after each epoch, from the plain script's lines
    'epoch N: test accuracy X, T s' (T counts from its first epoch: start-up and data loading excluded)."""
    return [[float(seconds), float(acc)] for acc, seconds in
            re.findall(r"test accuracy ([\d.]+), (\d+) s", output)]


def our_curve(rows):
    """[(seconds, validation accuracy)] after each epoch of our run, from the rows of its log.csv: the
    epochs' own seconds summed (start-up and the image cache excluded, as in reference_curve). Validation
    stands in for the test set, which only predict.py sees."""
    elapsed = itertools.accumulate(float(r["seconds"]) for r in rows)
    return [[round(seconds, 1), float(r["val_acc"])] for seconds, r in zip(elapsed, rows)]


def plot_time_to_accuracy(results, name):
    """reports/vs_plain/NAME.png: accuracy against training seconds, a panel per kind: every seed's curve
    of the plain script (test accuracy, each reference run once) and of ours (validation accuracy, and as
    a star the test accuracy predict.py measured at the end of training): the default command in blue,
    every candidate recipe in grey behind it (the tables name them). Dashed and dotted lines: the plain
    script's mean final accuracy and half its mean training seconds, the corner ours must reach. None
    when no row of the set has curves."""
    rows = [r for r in results if r["set"] == name and r.get("curve") and r.get("reference_curve")]
    if not rows:
        return None
    kinds = sorted({r["kind"] for r in rows})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        plain = list(reference_curves(r for r in rows if r["kind"] == kind).values())
        for i, curve in enumerate(plain):
            ax.plot(*zip(*curve), color="tab:orange", marker=".", alpha=0.8, zorder=2,
                    label=None if i else "plain script, test")
        # the target: the plain script's mean final accuracy, within half its mean training seconds
        ax.axhline(statistics.mean(curve[-1][1] for curve in plain), color="tab:orange", ls="--", lw=0.8,
                   label="plain script, mean final accuracy")
        ax.axvline(statistics.mean(curve[-1][0] for curve in plain) / 2, color="tab:orange", ls=":", lw=0.8,
                   label="half its mean training seconds")
        labelled = set()
        for r in (r for r in rows if r["kind"] == kind):
            default = "recipe_name" not in r
            colour, ours = ("tab:blue", "ours, default") if default else ("0.7", "ours, candidate recipes")
            ax.plot(*zip(*r["curve"]), color=colour, marker=".", alpha=0.8, zorder=3 if default else 1,
                    label=None if ours in labelled else f"{ours}, validation")
            ax.scatter([r["curve"][-1][0]], [r["acc_tta"]], color=colour, marker="*",
                       s=120 if default else 50, zorder=4 if default else 1,
                       label=None if ours in labelled else f"{ours}, test (TTA 8)")
            labelled.add(ours)
        ax.set(title=f"{name}, {kind}", xlabel="training seconds (epochs only)", ylabel="accuracy")
        late = [acc for r in rows if r["kind"] == kind for curve in (r["curve"], r["reference_curve"])
                for _, acc in curve[len(curve) // 3:]]  # the last two thirds: where the sides differ
        ax.set_ylim(max(0.0, min(late) - 0.05), 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    path = PLOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def by_row(results, candidates=False):
    """The results grouped into table rows, one per set and kind (and recipe, with candidates=True: every
    row; else the default command's alone), each the list of its seeds' results."""
    rows = {}
    for r in sorted(results, key=lambda r: (r["kind"], r["set"], r.get("recipe_name", ""), r.get("seed", 0))):
        if candidates or "recipe_name" not in r:
            rows.setdefault((r["kind"], r["set"], r.get("recipe_name")), []).append(r)
    return list(rows.values())


def label(row):
    """'vehicles6 scratch [recipe] seed 1'."""
    name, kind, seed, recipe_name = key(row)
    return " ".join([name, kind, *([recipe_name] if recipe_name else []), "seed", str(seed)])


def key(row):
    """What a rerun replaces: the same set, kind, seed and recipe."""
    return row["set"], row["kind"], row.get("seed", 0), row.get("recipe_name")


def mean_std(runs, key, digits=4):
    """A column over seeds: the value for one seed, mean ± sample std for more."""
    return spread([float(r[key]) for r in runs], digits)


def spread(values, digits=4):
    """One value as it is; several as mean ± sample std."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def time_to_reference(runs):
    """Over the seeds with curves: the seconds our validation accuracy took to first reach the plain
    script's final test accuracy, over the plain script's seconds for all its epochs; '-' without curves,
    'not reached' when some seed never got there."""
    ratios = []
    for r in (r for r in runs if r.get("curve") and r.get("reference_curve")):
        reached = [seconds for seconds, acc in r["curve"] if acc >= r["reference_acc"]]
        ratios.append(reached[0] / r["reference_curve"][-1][0] if reached else None)
    if not ratios:
        return "-"
    if None in ratios:
        return f"not reached ({ratios.count(None)} of {len(ratios)} seeds)"
    spread = f" ± {statistics.stdev(ratios):.2f}" if len(ratios) > 1 else ""
    return f"{statistics.mean(ratios):.2f}{spread}"


def reference_at_half(runs):
    """The plain script's own test accuracy at half its training seconds (its last epoch by then), over the
    seeds with curves; '-' without. What the plain script had at a time ratio of 0.5: mid-schedule, so
    below what it would reach with half the epochs, but a measure of how fast its recipe converges."""
    values = []
    for curve in reference_curves(runs).values():
        half = curve[-1][0] / 2
        values.append(([acc for seconds, acc in curve if seconds <= half] or [0.0])[-1])
    return spread(values) if values else "-"


def reference_curves(runs):
    """{(when, seed): curve} of the reference runs behind these rows: one reference run beside several
    recipes (--reuse-reference) counts once."""
    return {(r.get("reference_when"), r.get("seed", 0)): r["reference_curve"]
            for r in runs if r.get("reference_curve")}


def time_ratio(runs):
    return sum(r["train_seconds"] for r in runs) / sum(r["reference_seconds"] for r in runs)


def write_report(results):
    lines = ["# Default commands against the plain scripts", "",
             "Generated by `python bench/vs_plain.py` (module docstring: the exact commands). Each row ran "
             "one process at a time on the same machine; seconds are wall-clock training time, "
             "start-up included. Reference accuracy: its last epoch on the test set; ours: `predict.py` "
             "without and with `--tta 8` (the views validation kept are listed). Rows over several seeds "
             "show mean ± sample std, and their seconds are means. The two sides alternate: the reference "
             "first on even seeds, ours first on odd ones. *Time to its accuracy*: the training seconds "
             "(epochs only) our validation accuracy took to first reach the plain script's final test "
             "accuracy, over the plain script's own (a proxy: validation is not the test set).", "",
             "| set | kind | seeds | reference acc | ours acc | ours acc, TTA | reference s | ours s | "
             "time ratio | time to its accuracy | our recipe | TTA views kept |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for runs in by_row(results):
        first = runs[0]
        views = sorted({", ".join(r["tta_views"]) for r in runs})
        lines.append(f"| {first['set']} | {first['kind']} | {len(runs)} | "
                     f"{mean_std(runs, 'reference_acc')} | {mean_std(runs, 'acc')} | "
                     f"{mean_std(runs, 'acc_tta')} | {mean_std(runs, 'reference_seconds', 0)} | "
                     f"{mean_std(runs, 'train_seconds', 0)} | {time_ratio(runs):.2f} | "
                     f"{time_to_reference(runs)} | {first['recipe']} | {'; '.join(views)} |")
    lines += [""] + default_verdict(results)
    if any("recipe_name" in r for r in results):
        lines += (candidate_table(results) + verdict_table(results) + every_set_table(results)
                  + bound_table(results))
    figures = [(name, plot_time_to_accuracy(results, name)) for name in sorted({r["set"] for r in results})]
    lines += [f"\n![{name}: accuracy against training seconds]({path.relative_to(REPORT.parent)})"
              for name, path in figures if path]
    lines += ["", f"Machine: {platform.processor() or platform.machine()}. When each ran (reference, ours): "
              + "; ".join(f"{label(r)} {r['reference_when']}, {r['when']} ({r['machine']})"
                          + (f", predicted again {r['predicted_when']}" if r.get("predicted_when") else "")
                          for r in results)
              + "."]
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    update_readme(results)


def default_verdict(results):
    """Markdown lines, one per kind: on how many shared sets the default command reached the plain
    script's test accuracy within half its time (reached), and on each its paired gap to the plain script
    (a gap within 2 SE of zero is a tie at these seeds)."""
    lines = []
    for kind in KINDS:
        rows = {runs[0]["set"]: runs for runs in by_row(results) if runs[0]["kind"] == kind}
        cells = []
        for name in SHARED_SETS:
            text, ok = reached(rows[name]) if name in rows else ("not run", False)
            cells.append((f"{name} {text}" + (f", {gap(rows[name])}" if name in rows else ""), ok))
        lines.append(f"- The {kind} default reached on {sum(ok for _, ok in cells)} of {len(SHARED_SETS)} "
                     "shared sets: " + "; ".join(text for text, _ in cells) + ".")
    return lines


def candidate_table(results):
    """Markdown lines: every recipe measured beside the default command, by validation accuracy at the
    epoch best.pt kept (what chooses a default) and by time; the test accuracy only for the record."""
    lines = ["", "## Candidate recipes", "",
             "`python bench/vs_plain.py --recipe NAME=ARGS`: the default command with ARGS after it. A "
             "default changes where a recipe keeps validation accuracy at a lower time ratio on every set.",
             "*Plain at half its time*: the plain script's test accuracy after its last epoch within half "
             "its training seconds, what it had at a time ratio of 0.5 (mid-schedule: a measure of how fast "
             "its own recipe converges, where ours must beat its final accuracy in that time).",
             "", "| set | kind | recipe | seeds | val acc, kept epoch | reference acc | plain at half its "
             "time | ours acc, TTA | ours s | time ratio | time to its accuracy | our recipe |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for runs in by_row(results, candidates=True):
        first = runs[0]
        name = (f"{first['recipe_name']}: `{first['recipe_args']}`" if first.get("recipe_args")
                else first.get("recipe_name", "default"))  # a former default has no arguments
        val = mean_std(runs, "kept_val_acc") if all("kept_val_acc" in r for r in runs) else "-"
        lines.append(f"| {first['set']} | {first['kind']} | {name} | {len(runs)} | {val} | "
                     f"{mean_std(runs, 'reference_acc')} | {reference_at_half(runs)} | "
                     f"{mean_std(runs, 'acc_tta')} | {mean_std(runs, 'train_seconds', 0)} | "
                     f"{time_ratio(runs):.2f} | {time_to_reference(runs)} | {first['recipe']} |")
    return lines


def verdict_table(results):
    """Markdown lines, a row per set and kind: the fastest recipe measured (the default command or a
    candidate) whose test accuracy with TTA is at least the plain script's, and the most accurate one
    within half the plain script's time; each over the seeds it ran, against the references of its own
    runs. Where no recipe does both, the last column says how far the plain script itself had got."""
    lines = ["", "## Half the time: what was reached", "",
             "Per set and kind, over every row above (the default command and the candidates): the fastest "
             "recipe whose test accuracy with TTA 8 is at least the plain script's (mean over its seeds, "
             "each against the reference run beside it), and the most accurate within a time ratio of 0.5. "
             "Time ratios measured on different machines differ: the machine is named beside each.", "",
             "| set | kind | fastest at the plain script's accuracy | time ratio | most accurate at ratio "
             "≤ 0.5 | its accuracy, TTA / plain | plain at half its time |", "|---|---|---|---|---|---|---|"]
    groups = {}
    for runs in by_row(results, candidates=True):
        groups.setdefault((runs[0]["kind"], runs[0]["set"]), []).append(runs)
    for (kind, name), rows in sorted(groups.items()):
        matching = sorted((runs for runs in rows if at_least_plain(runs)), key=time_ratio)
        within = sorted((runs for runs in rows if within_half(runs)),
                        key=lambda runs: -mean(runs, "acc_tta"))
        fastest = f"{recipe_label(matching[0])} | {time_ratio(matching[0]):.2f}" if matching else "none | -"
        best = (f"{recipe_label(within[0])} | {mean(within[0], 'acc_tta'):.4f} / "
                f"{mean(within[0], 'reference_acc'):.4f}") if within else "none measured | -"
        lines.append(f"| {name} | {kind} | {fastest} | {best} | "
                     f"{reference_at_half([r for runs in rows for r in runs])} |")
    return lines


def every_set_table(results):
    """Markdown lines, a row per recipe (the default command included) measured on any shared set: on
    each, its test accuracy with TTA against the plain script's and its time ratio, and whether it got
    there; what a default needs is a row that does on every shared set."""
    lines = ["", "## One recipe on every shared set", "",
             "A default changes where one recipe reaches the plain script's test accuracy (with TTA 8, mean "
             "over its seeds) within half its time on every shared set. Each cell: ours / plain at the time "
             "ratio, and what fell short.", "",
             "| kind | recipe | " + " | ".join(SHARED_SETS) + " | sets reached |",
             "|---|---|" + "---|" * len(SHARED_SETS) + "---|"]
    table = {}
    for runs in by_row(results, candidates=True):
        first = runs[0]
        if first["set"] in SHARED_SETS:
            table.setdefault((first["kind"], first.get("recipe_name", "default")), {})[first["set"]] = runs
    rows = []
    for (kind, name), by_set in table.items():
        cells = [reached(by_set[s]) if s in by_set else ("not run", False) for s in SHARED_SETS]
        count = sum(ok for _, ok in cells)
        rows.append((kind, -count, name, f"| {kind} | {name} | " + " | ".join(text for text, _ in cells)
                     + f" | {count} of {len(SHARED_SETS)} |"))
    return lines + [line for *_, line in sorted(rows)]


def bound_table(results):
    """Markdown lines, a row per shared set and kind where the default command did not reach the plain
    script (default_verdict), or has not run, whatever a candidate did over its own seeds: what half its
    time buys there. Per run of ours at the plain script's input size (nothing frozen), beside the
    reference run with it: the seconds of our last epoch (at the full input size, after any progressive
    resizing) against its mean epoch, and how many such epochs of ours fit in half its training seconds
    after our start-up, against its own epochs (medians over such runs, per architecture).
    Then how far the most accurate recipe within that time fell short, the default command trained on
    every image (EVERY_IMAGE, no validation split), and the spread of the plain script's own test
    accuracy over its seeds: a gap inside that spread is a seed's luck, not a recipe's."""
    heading = ["", "## What bounds it", ""]
    intro = ["Where the default command did not reach (the lines under the main table), what half the "
             "plain script's time buys: the seconds of our last epoch at its input size (the full size, "
             "after any progressive resizing; runs with frozen stages left out) against its mean epoch, and "
             "how many such epochs of ours fit in half its training seconds after our start-up (medians "
             "over those runs per architecture, each against the reference run beside it). The last "
             "columns: the most accurate recipe within half its time, its gap to the plain script (paired "
             "by seed: a gap within 2 SE of zero is a tie at these seeds), and the plain script's own test "
             "accuracy over its seeds (lowest-highest). The plain script also trains on every image of "
             f"train/, where ours holds {VAL_FRACTION:.0%} out for validation (to keep the best epoch and "
             f"choose the test-time views): the default command with `{EVERY_IMAGE}` measures what that "
             "costs.", "",
             "| set | kind | the plain script's epochs | ours at its input size, s per epoch (ours / "
             "plain) | our epochs in half its time | most accurate within half: ours / plain, TTA | ours on "
             "every training image (no validation) | plain script over its seeds |",
             "|---|---|---|---|---|---|---|---|"]
    groups, table = {}, []
    for runs in by_row(results, candidates=True):
        if runs[0]["set"] in SHARED_SETS:
            groups.setdefault((runs[0]["kind"], runs[0]["set"]), []).append(runs)
    for (kind, name), rows in sorted(groups.items()):
        if any(reached(runs)[1] for runs in rows if "recipe_name" not in runs[0]):
            continue
        flat = [r for runs in rows for r in runs]
        size, epochs = KINDS[kind][0][1:]
        full_size = [r for r in flat if r.get("curve") and r.get("reference_curve")
                     and f", {size} px," in r["recipe"] and "--freeze-stages" not in r.get("recipe_args", "")]
        by_arch = {}
        for r in full_size:
            by_arch.setdefault(r["recipe"].split(",")[0], []).append(r)
        per_epoch, fits = [], []
        for arch, arch_runs in sorted(by_arch.items()):
            ours = [r["curve"][-1][0] - (r["curve"][-2][0] if len(r["curve"]) > 1 else 0) for r in arch_runs]
            plain = [r["reference_curve"][-1][0] / len(r["reference_curve"]) for r in arch_runs]
            fit = [(r["reference_seconds"] / 2 - (r["train_seconds"] - r["curve"][-1][0])) / epoch
                   for r, epoch in zip(arch_runs, ours)]
            ratio = statistics.median(o / p for o, p in zip(ours, plain))
            per_epoch.append(f"{arch}: {statistics.median(ours):.1f} s against "
                             f"{statistics.median(plain):.1f} s ({ratio:.2f}), "
                             f"{len(arch_runs)} run{'s' * (len(arch_runs) > 1)}")
            fits.append(f"{arch}: {statistics.median(fit):.1f}")
        per_epoch = "; ".join(per_epoch) or f"not measured (no run at {size} px without frozen stages)"
        fits = "; ".join(fits) or "-"
        within = sorted((runs for runs in rows if within_half(runs)), key=lambda runs: -mean(runs, "acc_tta"))
        closest = (f"{recipe_label(within[0])}: {mean(within[0], 'acc_tta'):.4f} / "
                   f"{mean(within[0], 'reference_acc'):.4f}, {gap(within[0])}") if within else "none measured"
        every_image = [runs for runs in rows if runs[0].get("recipe_args") == EVERY_IMAGE]
        no_split = f"{reached(every_image[0])[0]}, {gap(every_image[0])}" if every_image else "not run"
        plain_accs = list({(r.get("reference_when"), r.get("seed", 0)): r["reference_acc"]
                           for r in flat}.values())  # one reference run beside several recipes counts once
        table.append(f"| {name} | {kind} | {epochs} at {size} px | {per_epoch} | {fits} | {closest} | "
                      f"{no_split} | {min(plain_accs):.4f}-{max(plain_accs):.4f} ({len(plain_accs)} "
                      f"run{'s' * (len(plain_accs) > 1)}) |")
    if not table:
        return heading + ["The default command reached on every shared set, of both kinds (the lines under "
                          "the main table)."]
    return heading + intro + table


def gap(runs):
    """'gap -0.0040 ± 0.0120 (2 SE)': ours with TTA minus the plain script, the mean over seeds and twice its
    standard error (paired seed by seed); one seed has no error to show."""
    gaps = [float(r["acc_tta"]) - float(r["reference_acc"]) for r in runs]
    error = f" ± {2 * statistics.stdev(gaps) / len(gaps) ** 0.5:.4f} (2 SE)" if len(gaps) > 1 else ""
    return f"gap {statistics.mean(gaps):+.4f}{error}"


def reached(runs):
    """(cell text, reached?): ours / plain at the time ratio, over the seeds run, and what fell short."""
    ours, plain, ratio = mean(runs, "acc_tta"), mean(runs, "reference_acc"), time_ratio(runs)
    short = [what for what, ok in (("accuracy", at_least_plain(runs)), ("time", within_half(runs))) if not ok]
    seeds = f", {len(runs)} seeds" if len(runs) > 1 else ""
    return (f"{ours:.4f} / {plain:.4f} at {ratio:.2f}{seeds}: "
            + (f"{' and '.join(short)} short" if short else "reached")), not short


def within_half(runs):
    """The issue's time target: our training seconds at most half the plain script's."""
    return time_ratio(runs) <= 0.5


def at_least_plain(runs):
    """Our test accuracy with TTA at least the plain script's, mean over the seeds, at the 4 decimals the
    plain script prints (0.99759 of ours ties its 0.9976)."""
    return round(mean(runs, "acc_tta"), 4) >= round(mean(runs, "reference_acc"), 4)


def mean(runs, key):
    return statistics.mean(float(r[key]) for r in runs)


def recipe_label(runs):
    """'e10p32 (2 seeds, AMD EPYC (AVX2))': the recipe, its seeds and the machine it ran on."""
    machine = runs[0]["machine"].split(",")[0]  # without the loader workers
    return f"{runs[0].get('recipe_name', 'default')} ({len(runs)} seed{'s' * (len(runs) > 1)}, {machine})"


def update_readme(results):
    """The README's headline table, between its vs_plain markers: the same rows, fewer columns."""
    rows = ["| set | command | seeds | plain script | ours | ours, TTA 8 | training time, ours / plain |",
            "|---|---|---|---|---|---|---|"]
    for runs in by_row(results):
        first = runs[0]
        ours = "`train.py --pretrained --aug heavy`" if first["kind"] == "pretrained" else "`train.py`"
        seconds = [round(statistics.mean(r[key] for r in runs))
                   for key in ("train_seconds", "reference_seconds")]
        rows.append(f"| {first['set']} | {ours} | {len(runs)} | {mean_std(runs, 'reference_acc')} | "
                    f"{mean_std(runs, 'acc')} | {mean_std(runs, 'acc_tta')} | "
                    f"{seconds[0]} s / {seconds[1]} s = {time_ratio(runs):.2f} |")
    replace_in_readme("vs_plain", rows)


def latest_reference(results, this):
    """The row whose reference ran last for this key's set, kind and seed, beside whichever recipe."""
    rows = sorted((r for r in results if key(r)[:3] == this[:3]), key=lambda r: r["reference_when"])
    return rows[-1] if rows else None


def recipe(text):
    """--recipe NAME=ARGS -> (NAME, [ARGS split as the shell would])."""
    name, sep, extra = text.partition("=")
    if not sep or not re.fullmatch(r"[\w.-]+", name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=ARGS, e.g. short='--epochs 5'")
    return name, shlex.split(extra)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: " + ", ".join(SETS))
    p.add_argument("--kinds", default=",".join(KINDS), help="pretrained, scratch or both")
    p.add_argument("--reuse-reference", action="store_true",
                   help="keep the reference figures measured last for each set, kind and seed (same "
                        "machine, run earlier, beside any recipe) and rerun only ours")
    p.add_argument("--seeds", type=int, default=1, help="run both sides with seeds 0..N-1")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="start at seed S instead (seeds S..N-1): add seeds to rows measured before")
    p.add_argument("--recipe", type=recipe, metavar="NAME=ARGS",
                   help="a candidate: ours with ARGS after the default command, recorded under NAME")
    p.add_argument("--repredict", metavar="RECIPE",
                   help="predict again, from their run folders, the rows of RECIPE (a --recipe NAME, or "
                        "'default') on --sets, --kinds and --seeds: after a change to predict.py alone")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the results so far")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    store = RESULTS
    results = json.loads(store.read_text()) if store.exists() else []
    if args.repredict:
        wanted = {(name, kind, seed, None if args.repredict == "default" else args.repredict)
                  for name, kind, seed in itertools.product(args.sets.split(","), args.kinds.split(","),
                                                            range(args.first_seed, args.seeds))}
        for i, row in enumerate(results):
            if key(row) in wanted:
                results[i] = repredict(row)
                store.write_text(json.dumps(results, indent=1))
                print(label(row), results[i]["acc_tta"], flush=True)
    elif not args.report:
        for name in args.sets.split(","):
            for kind, seed in itertools.product(args.kinds.split(","), range(args.first_seed, args.seeds)):
                if name == "digits" and kind == "pretrained":
                    continue  # 8 px scans: the digits are the scratch model's set
                this = (name, kind, seed, args.recipe and args.recipe[0])
                row = compare(name, kind, seed, latest_reference(results, this) if args.reuse_reference
                              else None, args.recipe)
                results = [r for r in results if key(r) != this] + [row]
                store.write_text(json.dumps(results, indent=1))
                print(row, flush=True)
    write_report(results)


if __name__ == "__main__":
    main()
