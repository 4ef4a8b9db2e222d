"""Small helpers shared by every script: errors, seeding, devices, run folders, checkpoints, logs.

Nothing here is specific to one script; each function is used by at least two of them.
"""
import contextlib
import csv
import json
import os
import pickle
import platform
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from choices import SCRATCH_ARCHS

RUNS_DIR = Path("runs")


class UserError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


def run_cli(main, on_interrupt="interrupted"):
    """Run a script's main(); a UserError or Ctrl-C ends it with one clear line (on_interrupt says
    what was kept and how to go on, unless the interrupt carries its own line)."""
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        sys.exit(str(e) or on_interrupt)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name="auto"):
    """--device, or the best there is: under torchrun, this process's own GPU (LOCAL_RANK)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"--device {name!r}: not a device (auto, cpu, cuda, cuda:1, mps)") from None
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def loader_workers(requested, device, arch=None):
    """--workers, or the default for the device and model: on a CPU of 2 cores or fewer, none for the
    small CNN, whose dense convolutions keep both cores busy, so that a loader process only takes time
    from them; elsewhere one per core but the main process's, at most 8 (efficientnet_lite0's heavy
    pipeline overlaps with its steps). The measurements: python bench/ceiling.py."""
    if requested is not None:
        return requested
    cores = os.cpu_count() or 1
    if device.type == "cpu" and cores <= 2 and arch in SCRATCH_ARCHS:
        return 0
    return min(8, max(0, cores - 1))


def amp_dtype(device, amp):
    """The autocast dtype, or None for full precision.

    auto: bf16 where the hardware computes in it natively: GPUs from Ampere on, and CPUs with
    AVX512-BF16 or AMX (measured on such a 2-core CPU: the small CNN trains 1.8x and efficientnet_lite0
    1.4x faster); fp16 with a gradient scaler on older GPUs (emulated bf16 is slower); fp32 on other
    CPUs, where bf16 would be slower.
    """
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False)
                    else torch.float16)
        native = [getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                          "_is_amx_tile_supported")]
        return torch.bfloat16 if device.type == "cpu" and any(native) else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def init_distributed(device):
    """(rank, world size): under torchrun (WORLD_SIZE > 1) one process group, NCCL between GPUs and
    gloo on the CPU; (0, 1) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def from_rank_zero(value, world):
    """Rank 0's value, on every rank (a run folder name chosen once)."""
    if world == 1:
        return value
    import torch.distributed as dist
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


# bf16 AMP on a CPU is fast only with the last two
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description():
    """The CPU's model and the instruction sets its speed depends on: machines of one kind differ, and
    PyTorch picks other kernels (other speed, other rounding) on each, so two runs of the same command
    can differ in seconds per epoch and in scores."""
    model, flags = platform.processor(), set()
    with contextlib.suppress(OSError):  # Linux; elsewhere the model platform gives, and no flags
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu_model": model or None, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": [flag for flag in SPEED_FLAGS if flag in flags]}


def environment():
    """Package versions, git commit and the hardware, stored in every run's config.json."""
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
            **cpu_description(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


UNSAFE_IN_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")  # separators and control characters


def safe_name(name, what):
    """name as one file or folder name, or a one-line error. A class label (from a folder, a CSV or a
    checkpoint) becomes a path only through here, so no write leaves the folder the user gave."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or UNSAFE_IN_NAME.search(name):
        raise UserError(f"{what} {name!r} cannot be a folder name: no '/', '\\', control characters, "
                        "'.' or '..'")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in a file name: no CSV or report could hold it
        raise UserError(f"{what} {name!r} is not valid UTF-8: rename it") from None
    if len(name.encode("utf-8")) > 200:  # file systems stop at 255 bytes; leave room for suffixes
        raise UserError(f"{what} {name[:40]!r}... cannot be a folder name: longer than 200 bytes")
    return name


def safe_relative_path(name, what):
    """A relative path whose every part is a safe_name (a run name such as GRID/ROW-s0),
    or a one-line error."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{what} {name!r} is empty")
    for part in name.split("/"):
        safe_name(part, f"{what} {name!r}: part")
    return name


def new_run_dir(name, numbered=True):
    """runs/NAME, or runs/NAME-2, -3, ... when it exists (two runs started at once never share one);
    with numbered=False an existing runs/NAME is an error instead. NAME stays under runs/
    (safe_relative_path)."""
    safe_relative_path(name, "run name")
    try:
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000 if numbered else 2):
            run_dir = RUNS_DIR / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                run_dir.mkdir(parents=True)
                return run_dir
            except FileExistsError:
                continue
    except OSError as e:
        raise UserError(f"cannot create a run folder under {RUNS_DIR.resolve()} ({e.strerror})") from None
    raise UserError(f"{RUNS_DIR / name} exists{' with 998 numbered copies' if numbered else ''}: resume it "
                    "(python train.py --resume) or choose another --name")


def lock_run(run_dir):
    """Hold an exclusive lock on the run folder for as long as this process lives, so that two
    trainings (a --resume started twice) never write one folder; fails at once if it is taken."""
    import fcntl
    try:
        handle = open(Path(run_dir) / ".lock", "a")
    except OSError as e:
        raise UserError(f"cannot write to {run_dir} ({e.strerror}): make it writable, "
                        "or copy the run") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{run_dir} is in use by another training process") from None
    return handle


def run_folder(path, option):
    """A run folder given as `option` (--run, --init): a file inside it is named as the mistake it is."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{option} {path} is a file: pass the run folder that holds it ({path.parent})")
    if not path.is_dir():
        raise UserError(f"{option} {path}: run folder not found")
    return path


def check_writable(run_dir, needed_bytes):
    """Fail before the first epoch, not after it, when the run folder cannot take its checkpoints."""
    probe = Path(run_dir) / ".write-test"
    try:
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {run_dir} ({e.strerror})") from None
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(f"{run_dir} has {free / 2**20:.0f} MiB free; its checkpoints need about "
                        f"{needed_bytes / 2**20:.0f} MiB")


def latest_run(runs_dir=None, required="best.pt", pattern="*", trainer="train.py", nested=None):
    """The run folder (matching pattern) whose checkpoint was written last: the scripts' default run.
    With `nested` (train.py's "fold-*"), a checkpoint one level down stands for its parent folder."""
    runs_dir = Path(runs_dir or RUNS_DIR)
    found = [(p.stat().st_mtime, p.parent) for p in runs_dir.glob(f"{pattern}/{required}")]
    if nested:
        found += [(p.stat().st_mtime, p.parent.parent)
                  for p in runs_dir.glob(f"{pattern}/{nested}/{required}")]
    if not found:
        raise UserError(f"no run with {required} under {runs_dir}/{pattern}: "
                        f"train one first (python {trainer})")
    return max(found)[1]


def save_checkpoint(state, is_best, run_dir):
    """best.pt when the monitored metric improved, then last.pt (to resume), each written to a
    temporary file and renamed, so a crash never leaves a half-written checkpoint, and last.pt never
    claims a best that best.pt does not hold. A failed write (a full disk) removes its temporary file
    and keeps the previous checkpoints."""
    for name in (["best.pt"] if is_best else []) + ["last.pt"]:
        path = Path(run_dir) / name
        tmp = path.with_suffix(".pt.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError of its zip writer
            tmp.unlink(missing_ok=True)
            cause = ("make the folder writable" if isinstance(e, PermissionError) else "free some space")
            raise UserError(f"could not write {path} ({str(e).splitlines()[0]}); last.pt still holds the "
                            f"epoch before: {cause}, then --resume") from None


TRUST_FLAG = "--trust-checkpoint"


def load_checkpoint(path, required=("model", "classes"), writer="train.py", default_name="best.pt",
                    trust=False):
    """A checkpoint's contents, read with torch.load(weights_only=True): tensors, numbers, strings,
    lists and dicts only, so a file can never run code when it is opened. A file that holds anything
    else (a legacy pickle, or one crafted to run a command) is refused, unless `trust` (the scripts'
    --trust-checkpoint, for a file the user made) allows a full unpickling.
    `required`: keys the writer always stores; a folder means its `default_name`."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e):
            raise UserError(f"{path} is not a readable checkpoint (UnpicklingError: "
                            f"{str(e).splitlines()[0]})") from None
        raise UserError(f"{path} holds Python objects besides weights and settings, which could run code "
                        f"when loaded: refused. If you wrote this file yourself, pass {TRUST_FLAG}") from None
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]})") from None
    missing = [key for key in required if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise UserError(f"{path} is not a checkpoint written by {writer} (no {', '.join(missing)} inside)")
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


def write_csv(path, rows):
    """A whole CSV at once, through a temporary file: readers never see half of it."""
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path):
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def pyplot():
    """matplotlib's pyplot, drawing to files only (no display on servers), imported when first needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_photo_figure(fig, out_path, dpi=80):
    """Save a figure of photos as a palette PNG (256 colours): about a third of the bytes of full colour,
    small enough to commit with a report."""
    from PIL import Image
    fig.savefig(out_path, dpi=dpi)
    pyplot().close(fig)
    Image.open(out_path).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
        out_path, optimize=True)


def plot_curves(rows, out_path):
    """Loss, accuracy and learning rate per epoch from log.csv rows, with a dashed line on every panel
    where the loss function changed (CE to focal)."""
    plt = pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, keys in ((axes[0], ("train_loss", "val_loss")), (axes[1], ("train_acc", "val_acc", "val_f1"))):
        for key in (k for k in keys if k in rows[0]):  # no val_* columns without validation images
            ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
    axes[2].plot(epochs, [float(r["lr"]) for r in rows], marker="o", label="lr (end of epoch)")
    for before, row in zip(rows, rows[1:]):
        if row.get("loss_fn") != before.get("loss_fn"):
            for ax in axes:  # halfway between the last epoch of one loss and the first of the next
                ax.axvline(int(row["epoch"]) - 0.5, color="gray", linestyle="--",
                           label=f"{before['loss_fn']} -> {row['loss_fn']}")
    for ax, title in zip(axes, ("loss", "accuracy / macro-F1", "learning rate")):
        ax.set_title(title)
    save_epoch_figure(fig, axes, out_path)


def save_epoch_figure(fig, axes, out_path):
    """Per-epoch panels: x labelled, legend, light grid; written to out_path and closed."""
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:  # an empty panel (gan.py --fd-every 0) gets no legend
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    pyplot().close(fig)


def ema_update(decay):
    """AveragedModel's update with the decay warmed up as TensorFlow's ExponentialMovingAverage does with
    num_updates: min(decay, (1 + n) / (10 + n)) after n updates. A fixed decay of 0.99 or more would keep
    the random initial weights in the average through most of a short run; warmed up, 0.999 is reached
    after about 9,000 updates."""
    @torch.no_grad()
    def update(averaged, current, num_averaged):
        n = float(num_averaged)
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for avg, cur in zip(averaged, current):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:  # BatchNorm's batch counter
                avg.copy_(cur)
    return update
