"""Our pretrained default against timm's own train.py: same data split, model, ImageNet weights, input
size, epochs, batch size, optimizer and learning rate; wall time and test accuracy side by side.

    python bench/vs_timm.py --data ../shared/data/trashnet6 --timm DIR   # DIR: a pytorch-image-models
                                                                           checkout

What runs, one after the other on this machine:
    ours  python train.py --pretrained --aug heavy --data D, then python predict.py --tta 8
    timm  python DIR/train.py on an ImageFolder copy (symlinks) of the same train/validation split that
          train.py made, tf_efficientnet_lite0 with the same ImageNet weights (--pretrained-path, the
          efficientnet-lite0 package's file in timm's names), train.py's input size, epochs, batch size,
          AdamW, learning rate, weight decay, label smoothing, one warmup epoch, a cosine schedule and its
          own augmentation at our heavy pipeline's strength (crop scale 0.5-1, colour jitter 0.3, flips);
          then DIR/validate.py of its best checkpoint on the test images, labeled from solution.csv.
timm runs with DIR's own timm package (PYTHONPATH=DIR). Writes reports/vs_timm.md.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data import read_dataset  # noqa: E402
from models import lite_backbone  # noqa: E402
from utils import read_csv  # noqa: E402


def timed(command, env=None, cwd=ROOT):
    started = time.time()
    command = [str(part) for part in command]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: {' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    return time.time() - started, result.stdout + result.stderr


def image_folder(run_dir, data, out):
    """train/ and validation/ as our run split them, test/ labeled from solution.csv: symlinked class
    folders."""
    for row in read_csv(run_dir / "split.csv"):
        part = {"train": "train", "val": "validation"}.get(row["split"])
        if part:
            link = out / part / row["label"] / Path(row["file"]).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(row["file"]).resolve())
    test, labels = read_dataset(data)["test"], {r["id"]: r["label"]
                                                for r in read_csv(Path(data) / "solution.csv")}
    for path, image_id in zip(test.paths, test.ids):
        link = out / "test" / labels[image_id] / Path(path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(path).resolve())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--timm", required=True, help="a checkout of github.com/huggingface/pytorch-image-models")
    args = p.parse_args()
    name = Path(args.data).resolve().name
    work = ROOT / "runs" / "vs_timm" / name
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)

    ours_seconds, _ = timed([sys.executable, "train.py", "--pretrained", "--aug", "heavy",
                             "--data", args.data, "--name", f"vs_timm/{name}/ours"])
    timed([sys.executable, "predict.py", "--run", work / "ours", "--tta", "8"])
    ours = json.loads((work / "ours" / "test_metrics.json").read_text())
    config = json.loads((work / "ours" / "config.json").read_text())["args"]

    image_folder(work / "ours", args.data, work / "imagefolder")
    weights = work / "tf_efficientnet_lite0_imagenet.pth"
    torch.save(lite_backbone("efficientnet_lite0", pretrained=True).state_dict(), weights)
    classes = len(list((work / "imagefolder" / "train").iterdir()))
    env = {**os.environ, "PYTHONPATH": str(Path(args.timm).resolve())}
    timm_seconds, _ = timed([sys.executable, Path(args.timm) / "train.py", "--data-dir", work / "imagefolder",
                             "--model", "tf_efficientnet_lite0", "--pretrained", "--pretrained-path", weights,
                             "--num-classes", classes, "--img-size", config["img_size"],
                             "--epochs", config["epochs"], "-b", config["batch_size"], "--opt", "adamw",
                             "--lr", config["lr"], "--weight-decay", config["weight_decay"],
                             "--smoothing", config["label_smoothing"], "--sched", "cosine",
                             "--warmup-epochs", "1", "--scale", "0.5", "1.0", "--color-jitter", "0.3",
                             "--workers", config["workers"], "--device", "cpu", "--no-prefetcher",
                             "--output", work / "timm", "--experiment", "run",
                             "--checkpoint-hist", "1"], env=env)
    _, out = timed([sys.executable, Path(args.timm) / "validate.py", "--data-dir", work / "imagefolder",
                    "--split", "test", "--model", "tf_efficientnet_lite0", "--num-classes", classes,
                    "--img-size", config["img_size"],
                    "--checkpoint", work / "timm" / "run" / "model_best.pth.tar", "--device", "cpu",
                    "--no-prefetcher", "--results-file", work / "timm_test.json"], env=env)
    timm_top1 = float(re.findall(r"\* Acc@1 ([\d.]+)", out)[-1]) / 100
    lines = ["# Our default against timm's train.py", "",
             f"Generated by `python bench/vs_timm.py --data {args.data} --timm DIR` (its docstring lists the "
             f"settings); one run each, one after the other, {torch.get_num_threads()} CPU threads. Both: "
             f"tf_efficientnet_lite0 with the same ImageNet weights, {config['img_size']} px, "
             f"{config['epochs']} epochs, batch {config['batch_size']}, the same train/validation split.", "",
             "| | training wall time | test accuracy |", "|---|---|---|",
             f"| timm train.py (its best checkpoint, validate.py) | {timm_seconds:.0f} s | {timm_top1:.4f} |",
             f"| this project (train.py, predict.py --tta 8) | {ours_seconds:.0f} s | {ours['acc']:.4f}, "
             f"{ours['acc_tta']:.4f} with TTA |",
             "", f"Ratio of wall times, ours / timm: {ours_seconds / timm_seconds:.2f}."]
    (ROOT / "reports" / "vs_timm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))


if __name__ == "__main__":
    main()
