"""Small helpers shared by every script: errors, seeding, devices, run folders, checkpoints, logs.

Nothing here is specific to one script; each function is used by at least two of them.
"""
import csv
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RUNS_DIR = Path("runs")


class UserError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


def run_cli(main, on_interrupt="interrupted"):
    """Run a script's main(); a UserError or Ctrl-C ends it with one clear line (on_interrupt says
    what was kept and how to go on)."""
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(on_interrupt)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name="auto"):
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device, amp):
    """The autocast dtype, or None for full precision.

    auto: bf16 on GPUs that have it, else fp16 on CUDA; off on the CPU, where bf16 autocast is
    usually slower than fp32 unless the processor has AMX/AVX512-BF16.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def environment():
    """Package versions and git commit, stored in every run's config.json."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import albumentations
    import sklearn
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "albumentations": albumentations.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "cuda": torch.version.cuda, "git_commit": commit or None,
            "host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def new_run_dir(name):
    run_dir = RUNS_DIR / name
    if run_dir.exists():
        run_dir = RUNS_DIR / f"{name}-{time.strftime('%H%M%S')}"
    run_dir.mkdir(parents=True)
    return run_dir


def latest_run(runs_dir=RUNS_DIR, required="best.pt", pattern="*", trainer="train.py"):
    """The run folder (matching pattern) whose checkpoint was written last: the scripts' default run."""
    found = sorted(Path(runs_dir).glob(f"{pattern}/{required}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no run with {required} under {runs_dir}/{pattern}: train one first (python {trainer})")
    return found[-1].parent


def save_checkpoint(state, is_best, run_dir):
    """last.pt always (to resume), best.pt when the monitored metric improved.

    Written to a temporary file and renamed, so a crash mid-write never destroys the previous one.
    """
    for name in ["last.pt"] + (["best.pt"] if is_best else []):
        tmp = Path(run_dir) / f"{name}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, Path(run_dir) / name)


def load_checkpoint(path, map_location="cpu"):
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "classes" not in ckpt:
        raise UserError(f"{path} is not a checkpoint written by train.py (no model/classes inside)")
    return ckpt


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def append_csv(path, row):
    """Append one dict as a CSV row, writing the header the first time."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_csv(path):
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(rows, out_path):
    """Loss, accuracy and learning rate per epoch from log.csv rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("train_loss", "val_loss"):
        axes[0].plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
    for key in ("train_acc", "val_acc", "val_f1"):
        axes[1].plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
    axes[2].plot(epochs, [float(r["lr"]) for r in rows], marker="o", label="lr (end of epoch)")
    for ax, title in zip(axes, ("loss", "accuracy / macro-F1", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
