"""The names the scripts accept for their choices, and the help layout, importable without torch so
that `--help` answers at once. Each tuple is implemented by the module named beside it, which
imports it from here (one list, one place)."""
import argparse
import math

LITE_ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # models.py
TORCHVISION_ARCHS = ("resnet18", "resnet50", "resnext50_32x4d", "efficientnet_b0", "convnext_tiny",
                     "mobilenet_v3_large")  # models.py
SCRATCH_ARCHS = ("smallcnn", "poolcnn")  # models.py: trained from scratch, any input size
ARCHS = SCRATCH_ARCHS + LITE_ARCHS + TORCHVISION_ARCHS  # models.py
ATTENTIONS = ("none", "se", "cbam")  # models.py
AUGMENTATIONS = ("none", "flips", "light", "heavy")  # augment.py
UPSCALE = ("nearest", "bilinear", "bicubic", "lanczos", "area")  # augment.py: interpolation when enlarging
BALANCE_METHODS = ("none", "sampler", "weights", "effective", "oversample", "undersample",
                   "synthetic")  # balance.py
AMP = ("auto", "bf16", "fp16", "off")  # utils.amp_dtype
VAL_FRACTION = 0.15  # train.py --val-fraction, data.py split --val and the split eda.py shows
NUMBER_BLOCK = 25  # train.py and data.py --block: numbered files in blocks of this many stay together
WORKERS_HELP = ("data loader processes (default: one per core but the main process's, at most 8; none for "
                "the small CNN on a CPU of 2 cores or fewer, where loading in the main process is faster)")


def arch(name):
    """argparse type of --arch: one of ARCHS, or timm:NAME for any timm model."""
    if name in ARCHS or (name.startswith("timm:") and len(name) > 5):
        return name
    raise argparse.ArgumentTypeError(f"{name!r}: choose from {', '.join(ARCHS)}, or timm:NAME")


def bounded(kind, low=None, high=None, open_low=False, open_high=False):
    """argparse type: an int or a finite float within [low, high] (an end left out is unbounded, an open one
    excluded), so a value out of range is one `error:` line before any work starts."""
    interval = (f"{'(' if open_low else '['}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{')' if open_high else ']'}")

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not "
                                             f"{'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if ((low is not None and (value < low or (open_low and value == low)))
                or (high is not None and (value > high or (open_high and value == high)))):
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value
    return convert


POSITIVE_INT = bounded(int, 1)
NON_NEGATIVE_INT = bounded(int, 0)
POSITIVE = bounded(float, 0, open_low=True)
NON_NEGATIVE = bounded(float, 0)
FRACTION = bounded(float, 0, 1)  # a share, 0 and 1 included
PROBABILITY = bounded(float, 0, 1, open_high=True)  # dropout, smoothing, EMA decay: 1 would stop learning
IMAGE_SIZE = bounded(int, 16, 2048)  # the small CNN pools 4 times;
                                     # beyond 2048 px a batch rarely fits in memory


def image_size_or_off(text):
    """argparse type of a size that 0 turns off (train.py --progressive): 0, or an IMAGE_SIZE."""
    return 0 if text.strip() == "0" else IMAGE_SIZE(text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default; options whose default is
    derived at run time (None) or a plain switch say so in their own help instead of "None"."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
