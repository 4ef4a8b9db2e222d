"""The project's default commands against the plain scripts a user could write instead, side by side.

For every dataset, one run after the other on this machine (never two at once):
    pretrained  python ../shared/bench/plain_finetune.py D 160 6
                against python train.py --pretrained --aug heavy --data D, then python predict.py --tta 8
    scratch     python ../shared/bench/plain_scratch.py D 64 10
                against python train.py --data D, then python predict.py --tta 8
The reference's score is its last epoch's test accuracy; ours is predict.py's, with and without the
test-time views. Times are wall-clock seconds of each training process, start-up included. With
--seeds N both sides run N times, seeds 0..N-1 (ours with --seed S, the reference with its
torch.manual_seed offset by S, the script itself unchanged), and the table shows mean ± std.

Usage:
    python bench/vs_plain.py                                  # every set below, both kinds
    python bench/vs_plain.py --sets trashnet6 --kinds pretrained
    python bench/vs_plain.py --kinds scratch --reuse-reference  # ours again,
                                                                  the references as measured before
    python bench/vs_plain.py --sets utilityvehicles10 --kinds scratch --seeds 3
    python bench/vs_plain.py --report                         # rewrite the report from the results so far

Results accumulate in reports/vs_plain.json, a row per set, kind and seed (a rerun replaces its rows;
run folders in runs/vs_plain/); the table goes to
reports/vs_plain.md, and its main columns to the README (between its vs_plain markers).
"""
import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from readme_table import replace_in_readme

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SETS = {"vehicles6": SHARED / "data" / "vehicles6",
        "utilityvehicles10": SHARED / "data" / "utilityvehicles10",
        "trashnet6": SHARED / "data" / "trashnet6", "digits": ROOT / "builtin_data" / "digits"}
KINDS = {"pretrained": (["plain_finetune.py", "160", "6"], ["--pretrained", "--aug", "heavy"]),
         "scratch": (["plain_scratch.py", "64", "10"], [])}
OUT = ROOT / "runs" / "vs_plain"
# Runs a reference script with its torch.manual_seed(0) offset by a seed: the script stays as written.
SEEDED = ("import runpy, sys, torch; from pathlib import Path; manual_seed = torch.manual_seed; "
          "torch.manual_seed = lambda s: manual_seed(s + {seed}); sys.argv = sys.argv[1:]; "
          "sys.path.insert(0, str(Path(sys.argv[0]).parent)); "
          "runpy.run_path(sys.argv[0], run_name='__main__')")
REPORT = ROOT / "reports" / "vs_plain.md"
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


def compare(name, kind, seed=0, earlier=None):
    """One row: the reference script, then ours, with one seed. earlier: this row's stored result, whose
    reference figures are kept instead of running the reference again (--reuse-reference)."""
    data = SETS[name]
    if name == "digits" and not data.is_dir():  # the built-in set is written on first use
        subprocess.run([sys.executable, "-c", "import data; data.resolve_data_dir(None)"],
                       cwd=ROOT, check=True)
    reference, ours = KINDS[kind]
    tag = f"{name}-{kind}" + (f"-s{seed}" if seed else "")
    run = OUT / tag
    shutil.rmtree(run, ignore_errors=True)  # train.py would otherwise pick a new name beside it
    if earlier:
        ref_seconds, ref_acc, ref_when = (earlier["reference_seconds"], earlier["reference_acc"],
                                          earlier["reference_when"])
    else:
        ref_when = time.strftime("%Y-%m-%d %H:%M")
        script = [str(SHARED / "bench" / reference[0]), str(data), *reference[1:]]
        ref_seconds, out = timed([sys.executable, *(["-c", SEEDED.format(seed=seed)] if seed else []),
                                  *script], OUT / f"{tag}-reference.log")
        ref_acc = float(re.findall(r"test accuracy ([\d.]+)", out)[-1])
    train_seconds, _ = timed([sys.executable, "train.py", "--data", data, "--name", f"vs_plain/{tag}", *ours,
                              *(["--seed", str(seed)] if seed else [])], OUT / f"{tag}-train.log")
    predict_seconds, _ = timed([sys.executable, "predict.py", "--run", run, "--tta", "8"],
                               OUT / f"{tag}-predict.log")
    metrics = json.loads((run / "test_metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())["args"]
    return {"set": name, "kind": kind, "seed": seed, "reference": " ".join(reference),
            "reference_acc": ref_acc, "reference_seconds": round(ref_seconds), "reference_when": ref_when,
            "acc": metrics["acc"], "acc_tta": metrics["acc_tta"], "tta_views": metrics["tta_view_names"],
            "train_seconds": round(train_seconds), "predict_seconds": round(predict_seconds),
            "recipe": f"{config['arch']}, {config['img_size']} px, {config['epochs']} epochs, "
                      f"batch {config['batch_size']}",
            "machine": f"{platform.machine()}, {config.get('workers')} loader worker(s)",
            "when": time.strftime("%Y-%m-%d %H:%M")}


def by_row(results):
    """The results grouped into table rows, one per set and kind, each the list of its seeds' results."""
    rows = {}
    for r in sorted(results, key=lambda r: (r["kind"], r["set"], r.get("seed", 0))):
        rows.setdefault((r["kind"], r["set"]), []).append(r)
    return list(rows.values())


def mean_std(runs, key, digits=4):
    """A column over seeds: the value for one seed, mean ± sample std for more."""
    values = [float(r[key]) for r in runs]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def time_ratio(runs):
    return sum(r["train_seconds"] for r in runs) / sum(r["reference_seconds"] for r in runs)


def write_report(results):
    lines = ["# Default commands against the plain scripts", "",
             "Generated by `python bench/vs_plain.py` (module docstring: the exact commands). Each row ran "
             "one process at a time on the same machine; seconds are wall-clock training time, "
             "start-up included. Reference accuracy: its last epoch on the test set; ours: `predict.py` "
             "without and with `--tta 8` (the views validation kept are listed). Rows over several seeds "
             "show mean ± sample std, and their seconds are means.", "",
             "| set | kind | seeds | reference acc | ours acc | ours acc, TTA | reference s | ours s | "
             "time ratio | our recipe | TTA views kept |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for runs in by_row(results):
        first = runs[0]
        views = sorted({", ".join(r["tta_views"]) for r in runs})
        lines.append(f"| {first['set']} | {first['kind']} | {len(runs)} | "
                     f"{mean_std(runs, 'reference_acc')} | {mean_std(runs, 'acc')} | "
                     f"{mean_std(runs, 'acc_tta')} | {mean_std(runs, 'reference_seconds', 0)} | "
                     f"{mean_std(runs, 'train_seconds', 0)} | {time_ratio(runs):.2f} | {first['recipe']} | "
                     f"{'; '.join(views)} |")
    lines += ["", f"Machine: {platform.processor() or platform.machine()}. When each ran (reference, ours): "
              + "; ".join(f"{r['set']} {r['kind']} seed {r.get('seed', 0)} {r['reference_when']}, {r['when']}"
                          for r in results) + "."]
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    update_readme(results)


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: " + ", ".join(SETS))
    p.add_argument("--kinds", default=",".join(KINDS), help="pretrained, scratch or both")
    p.add_argument("--reuse-reference", action="store_true",
                   help="keep each row's stored reference figures (same machine, run earlier) and rerun "
                        "only ours")
    p.add_argument("--seeds", type=int, default=1, help="run both sides with seeds 0..N-1")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the results so far")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    store = RESULTS
    results = json.loads(store.read_text()) if store.exists() else []
    if not args.report:
        for name in args.sets.split(","):
            for kind, seed in ((k, s) for k in args.kinds.split(",") for s in range(args.seeds)):
                if name == "digits" and kind == "pretrained":
                    continue  # 8 px scans: the digits are the scratch model's set
                key = (name, kind, seed)
                earlier = [r for r in results if (r["set"], r["kind"], r.get("seed", 0)) == key]
                row = compare(name, kind, seed, earlier[0] if args.reuse_reference and earlier else None)
                results = [r for r in results if (r["set"], r["kind"], r.get("seed", 0)) != key] + [row]
                store.write_text(json.dumps(results, indent=1))
                print(row, flush=True)
    write_report(results)


if __name__ == "__main__":
    main()
