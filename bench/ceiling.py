"""How close train.py's epoch comes to the hardware, and where the rest goes.

Three timings of one epoch (training steps + validation passes), taken in this process, in turn, --reps
times, so that a shared machine's drift (10-30% within minutes on the 2-core development machine) hits
all three alike:
    train.py   the functions train.py's loop calls each epoch (train_one_epoch, evaluate) with its own
               loaders: decoding is cached, augmentation runs in the loader workers (in this process
               with --workers 0, the small CNN's default on 2 cores)
    in memory  the same two functions on that epoch's batches already collected in a list: train.py's
               loop without its loader
    ceiling    the same model, batch size and optimizer doing forward + backward + step on random
               tensors (no loader, no augmentation), as many steps and validation batches
plus `loader alone`: iterating both loaders with the model idle, the CPU time augmentation needs.
Each ratio is taken per round and the median kept: ceiling / train.py (1.0: nothing lost) and
ceiling / in memory (what the loop itself loses). The first epoch (workers starting, caches filling)
is not counted.

    python bench/ceiling.py --data ../shared/data/trashnet6                      # both default models
    python bench/ceiling.py --data ../shared/data/trashnet6 --configs lite0-128 --reps 5
    python bench/ceiling.py --data ../shared/data/trashnet6 --configs smallcnn-64-workers0,smallcnn-64-compile

Configurations ending in -workersN or -compile add that option to train.py; the ceiling stays the plain
model's, so their ratio shows what the option gains or loses.

Writes reports/ceiling.md (one row per configuration and --label); rows accumulate in reports/ceiling.json.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the project's own loop, model and loaders)
from models import build_model  # noqa: E402
from utils import RUNS_DIR  # noqa: E402

CONFIGS = {"smallcnn-64": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64"],
           "lite0-128": ["--pretrained", "--aug", "heavy", "--img-size", "128"],
           "lite0-default": ["--pretrained", "--aug", "heavy"],
           "smallcnn-64-workers0": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64",
                                    "--workers", "0"],
           "lite0-128-workers0": ["--pretrained", "--aug", "heavy", "--img-size", "128", "--workers", "0"],
           "smallcnn-64-workers1": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64",
                                    "--workers", "1"],
           "lite0-128-workers1": ["--pretrained", "--aug", "heavy", "--img-size", "128", "--workers", "1"],
           "smallcnn-64-compile": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64", "--compile"],
           "lite0-128-compile": ["--pretrained", "--aug", "heavy", "--img-size", "128", "--compile"]}


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Epochs:
    """One train.py run set up as train.py sets it up (train.prepare), ready to time its epochs."""

    def __init__(self, data, args, name):
        shutil.rmtree(RUNS_DIR / "ceiling" / name, ignore_errors=True)
        self.run = train.prepare(train.parse_args(["--data", data, *args, "--name", f"ceiling/{name}"]))
        self.criterion = train.make_criterion(self.run.args, 1, self.run.class_weights)[0]
        self.loaders = self.run.train_loader, self.run.val_loader
        self.epoch = 0
        self.with_loaders()  # not counted: workers start, first kernels
        self.run.train_order.set_epoch(train.epoch_order(self.run, 0), 0)
        self.batches = list(self.loaders[0]), list(self.loaders[1])

    def one(self, loaders):
        self.run.train_loader, self.run.val_loader = loaders
        self.epoch += 1
        train.train_one_epoch(self.run, self.criterion, self.epoch)
        train.evaluate(self.run, self.run.eval_model)

    def with_loaders(self):
        return timed(lambda: self.one(self.loaders))

    def in_memory(self):
        return timed(lambda: self.one(self.batches))

    def loader_alone(self):
        self.run.train_order.set_epoch(train.epoch_order(self.run, 0), 0)
        return timed(lambda: [None for loader in self.loaders for _ in loader])


class Ceiling:
    """The model, batch size and optimizer of a run on random tensors already in memory."""

    def __init__(self, run):
        config = run.args
        self.model = build_model(config.arch, len(run.classes), False, config.attention, config.drop,
                                 config.width)[0].to(memory_format=torch.channels_last)
        self.optimizer = train.make_optimizer(config, self.model, len(run.train_loader))[0]  # train.py's own
        batch, size = config.batch_size, config.img_size
        self.images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.val_images = torch.randn(2 * batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.targets = torch.randint(0, len(run.classes), (batch,))
        self.steps, self.val_batches = len(run.train_loader), len(run.val_loader)
        self.dtype = run.dtype  # what train.py trains with (AMP auto: bf16 on a CPU that has it)
        self.step()  # warm-up: allocator and kernels

    def autocast(self):
        return torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def step(self):
        with self.autocast():
            loss = F.cross_entropy(self.model(self.images).float(), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def epoch(self):
        def run():
            self.model.train()
            for _ in range(self.steps):
                self.step()
            self.model.eval()
            with torch.no_grad(), self.autocast():
                for _ in range(self.val_batches):
                    self.model(self.val_images)
        return timed(run)


def measure(data, name, reps):
    epochs = Epochs(data, CONFIGS[name], name)
    ceiling = Ceiling(epochs.run)
    rounds = [{"train.py": epochs.with_loaders(), "in memory": epochs.in_memory(), "ceiling": ceiling.epoch()}
              for _ in range(reps)]
    loader = epochs.loader_alone()
    median = lambda key: statistics.median(r[key] for r in rounds)
    config = epochs.run.args
    return {"config": name, "args": " ".join(CONFIGS[name]),
            "model": f"{config.arch}, {config.img_size} px, batch {config.batch_size}, {config.optimizer}, "
                     f"{config.workers} worker(s), AMP {config.amp}",
            "images": f"{len(epochs.run.train_set)} train, {len(epochs.run.val.paths)} val",
            "reps": reps, "train_epoch": round(median("train.py"), 2),
            "in_memory_epoch": round(median("in memory"), 2),
            "ceiling_epoch": round(median("ceiling"), 2), "loader_alone": round(loader, 2),
            "ratio": round(statistics.median(r["ceiling"] / r["train.py"] for r in rounds), 3),
            "loop_ratio": round(statistics.median(r["ceiling"] / r["in memory"] for r in rounds), 3),
            "rounds": rounds}


def row_text(r):
    seconds = lambda key: f"{r[key]} s" if key in r else "–"
    loop = f"{r['loop_ratio']:.2f}" if "loop_ratio" in r else "–"
    ratio = r.get("ratio", r["ceiling_epoch"] / r["train_epoch"])
    return (f"| {r['label']} | {r.get('data', 'trashnet6')} | `{r['args']}` | {r['model']} | "
            f"{r.get('reps', 1)} | {seconds('train_epoch')} | {seconds('in_memory_epoch')} | "
            f"{seconds('ceiling_epoch')} | {seconds('loader_alone')} | **{ratio:.2f}** | {loop} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--configs", default="smallcnn-64,lite0-128", help=", ".join(CONFIGS))
    p.add_argument("--reps", type=int, default=3, help="rounds of (train.py, in memory, ceiling) epochs")
    p.add_argument("--label", default="now",
                   help="what code this is (rows of other labels stay in the report)")
    p.add_argument("--reports", default=str(ROOT / "reports"), help="where ceiling.json and ceiling.md live")
    args = p.parse_args()
    args.data, reports = str(Path(args.data).resolve()), Path(args.reports).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # train.py's run folders are relative to the project
    store = reports / "ceiling.json"
    results = json.loads(store.read_text()) if store.exists() else []
    for name in args.configs.split(","):
        row = {"label": args.label, "data": Path(args.data).name, **measure(args.data, name, args.reps)}
        results = [r for r in results if (r["label"], r["config"]) != (args.label, name)] + [row]
        store.write_text(json.dumps(results, indent=1))
        print({k: v for k, v in row.items() if k != "rounds"}, flush=True)
    lines = ["# train.py against the hardware ceiling", "",
             "Generated by `python bench/ceiling.py --data ../shared/data/DATA --label LABEL` on "
             f"{torch.get_num_threads()} threads; its docstring says what each column times. Ratio = "
             "ceiling / train.py, loop ratio = ceiling / in memory, each the median over rounds. Rows with "
             "one round and no in-memory column ran an earlier version of this script, which timed train.py "
             "in its own process and the ceiling after it (more exposed to drift). Rows labelled `before` "
             "ran from the code as it was before this benchmark existed.", "",
             "| code | data | train.py settings | model and batch | rounds | train.py epoch | in memory | "
             "ceiling | loader alone | ratio | loop ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [row_text(r)
              for r in sorted(results, key=lambda r: (r.get("data", "trashnet6"), r["config"], r["label"]))]
    (reports / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))


if __name__ == "__main__":
    main()
