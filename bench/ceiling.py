"""How close train.py's epoch comes to the hardware: its steady-state epoch time against a ceiling.

The ceiling is the same model, batch size and optimizer doing forward + backward + step on random
tensors already in memory (no decoding, no augmentation, no loader), for as many steps as train.py's
epoch takes, plus as many validation forward passes; measured in this process with the same threads, twice
right after train.py, the faster counting (a shared machine's speed drifts within minutes, and drift
only slows a run down; a ratio above 1 means it drifted between the two: run it again).
train.py runs as a user runs it (its own process), for --epochs epochs; its steady state is the mean
`seconds` of log.csv after the first epoch (which also pays for start-up and the first workers).

    python bench/ceiling.py --data ../shared/data/vehicles6                       # both default models
    python bench/ceiling.py --data ../shared/data/vehicles6 --configs lite0-128
    python bench/ceiling.py --data ../shared/data/trashnet6 --configs smallcnn-64-workers0,smallcnn-64-compile

Configurations ending in -workers0 or -compile add that option to train.py; the ceiling stays the plain
model's, so their ratio shows what the option gains or loses.

Writes reports/ceiling.md (one row per configuration and --label: train.py epoch, ceiling epoch,
ratio); rows accumulate in reports/ceiling.json.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models import build_model  # noqa: E402  (the project's own model, as train.py builds it)
from utils import amp_dtype  # noqa: E402

CONFIGS = {"smallcnn-64": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64"],
           "lite0-128": ["--pretrained", "--aug", "heavy", "--img-size", "128"],
           "lite0-default": ["--pretrained", "--aug", "heavy"],
           "smallcnn-64-workers0": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64", "--workers", "0"],
           "lite0-128-workers0": ["--pretrained", "--aug", "heavy", "--img-size", "128", "--workers", "0"],
           "smallcnn-64-compile": ["--arch", "smallcnn", "--aug", "light", "--img-size", "64", "--compile"],
           "lite0-128-compile": ["--pretrained", "--aug", "heavy", "--img-size", "128", "--compile"]}


def train_epoch_seconds(data, args, epochs, name):
    """(steady-state seconds per epoch, the run's settings) of train.py on the data."""
    run_dir = ROOT / "runs" / "ceiling" / name
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    result = subprocess.run([sys.executable, "train.py", "--data", data, *args, "--epochs", str(epochs),
                             "--name", f"ceiling/{name}"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: train.py failed:\n{result.stderr[-2000:]}")
    rows = [line.split(",") for line in (run_dir / "log.csv").read_text().splitlines()]
    seconds = [float(r[rows[0].index("seconds")]) for r in rows[2:]]  # epochs 2.. (row 0 is the header)
    config = json.loads((run_dir / "config.json").read_text())["args"]
    split = [line.split(",")[0] for line in (run_dir / "split.csv").read_text().splitlines()[1:]]
    return sum(seconds) / len(seconds), config, split.count("train"), split.count("val")


def ceiling_seconds(config, train_images, val_images):
    """One epoch's worth of optimizer steps and validation batches on tensors already in memory."""
    model, _, _ = build_model(config["arch"], 10, False, config["attention"], config["drop"], config["width"])
    model = model.to(memory_format=torch.channels_last)
    batch, size = config["batch_size"], config["img_size"]
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-4) if config["optimizer"] == "adamw" else
                 torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True))
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 10, (batch,))
    steps, val_batches = train_images // batch, -(-val_images // (2 * batch))
    dtype = amp_dtype(torch.device("cpu"), config.get("amp", "off"))  # what train.py trained with
    autocast = lambda: torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
    model.train()
    for _ in range(2):  # warm-up: allocator and kernels
        with autocast():
            loss = F.cross_entropy(model(images).float(), targets)
        loss.backward()
    started = time.time()
    for _ in range(steps):
        with autocast():
            loss = F.cross_entropy(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    val = torch.randn(2 * batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast():
        for _ in range(val_batches):
            model(val)
    return time.time() - started


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--configs", default="smallcnn-64,lite0-128,lite0-default", help=", ".join(CONFIGS))
    p.add_argument("--epochs", type=int, default=3, help="train.py epochs (the first is not counted)")
    p.add_argument("--label", default="now", help="what code this is (rows of other labels stay in the report)")
    p.add_argument("--reports", default=str(ROOT / "reports"), help="where ceiling.json and ceiling.md live")
    args = p.parse_args()
    store = Path(args.reports) / "ceiling.json"
    results = json.loads(store.read_text()) if store.exists() else []
    for name in args.configs.split(","):
        epoch, config, train_images, val_images = train_epoch_seconds(args.data, CONFIGS[name], args.epochs, name)
        ceiling = min(ceiling_seconds(config, train_images, val_images) for _ in range(2))
        if ceiling > epoch:
            print(f"warning: {name}: the ceiling took longer than train.py's epoch: the machine's speed drifted")
        row = {"label": args.label, "config": name, "args": " ".join(CONFIGS[name]),
               "model": f"{config['arch']}, {config['img_size']} px, batch {config['batch_size']}, "
                        f"{config['optimizer']}, {config['workers']} worker(s), AMP {config.get('amp', 'off')}",
               "train_epoch": round(epoch, 1), "ceiling_epoch": round(ceiling, 1)}
        results = [r for r in results if (r["label"], r["config"]) != (args.label, name)] + [row]
        store.write_text(json.dumps(results, indent=1))
        print(row, flush=True)
    lines = ["# train.py against the hardware ceiling", "",
             f"Generated by `python bench/ceiling.py --data {args.data} --label LABEL` on "
             f"{torch.get_num_threads()} threads; its docstring says what the ceiling is. Ratio = ceiling / train.py "
             "(1.0: no time lost to loading, augmentation, logging or checkpoints). Rows labelled `before` ran "
             "from the code as it was before this benchmark existed (the same script, copied beside it).", "",
             "| code | train.py settings | model and batch | train.py epoch (steady state) | ceiling epoch | ratio |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | `{r['args']}` | {r['model']} | {r['train_epoch']} s | {r['ceiling_epoch']} s | "
              f"{r['ceiling_epoch'] / r['train_epoch']:.2f} |" for r in sorted(results, key=lambda r: (r["config"],
                                                                                                     r["label"]))]
    (Path(args.reports) / "ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))


if __name__ == "__main__":
    main()
