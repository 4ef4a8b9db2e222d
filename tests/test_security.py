"""No checkpoint loader runs code from a file: every one reads with weights_only=True.

Each poisoned file is a real checkpoint plus one extra key whose unpickling would create a marker
file (a harmless stand-in for a shell command). Every loader must refuse it with one `error:` line
naming --trust-checkpoint, and the marker must not exist afterwards.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, colour_image


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def poison(path, marker, state=None):
    state = torch.load(path, weights_only=True) if state is None else state
    torch.save({**state, "note": Payload(marker)}, path)


def run(cwd, script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def poisoned_run(trained_run, tmp_path):
    _, data, run_dir = trained_run
    work = tmp_path / "work"
    copy = work / "runs" / "tiny"
    shutil.copytree(run_dir, copy)
    marker = tmp_path / "PWNED"
    poison(copy / "best.pt", marker)
    poison(copy / "last.pt", marker)
    return work, data, copy, marker


def test_no_loader_runs_code_from_a_checkpoint(poisoned_run, tmp_path):
    work, data, run_dir, marker = poisoned_run
    gan_last, espcn = tmp_path / "gan_last.pt", tmp_path / "espcn.pt"
    torch.save({"generator": {}, "ema": {}, "args": {}, "note": Payload(marker)}, gan_last)
    torch.save({"model": {}, "scale": 2, "width": 32, "note": Payload(marker)}, espcn)
    loaders = [("train.py", "--resume", run_dir),
               ("train.py", "--data", data, "--init", run_dir, "--epochs", "1", "--workers", "0"),
               ("predict.py", "--run", run_dir, "--workers", "0"),
               ("predict.py", "--workers", "0"),  # the newest runs/*/best.pt, found by itself
               ("gan.py", "--resume", gan_last),
               ("gan.py", "sample", "--run", gan_last, "--per-class", "1", "--out", tmp_path / "samples"),
               ("superres.py", "upscale", "--model", espcn, "--data", data)]
    for script, *args in loaders:
        result = run(work, script, *args)
        assert result.returncode != 0, (script, args, result.stdout)
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "--trust-checkpoint" in errors[0], (script, args, result.stderr)
        assert not marker.exists(), f"{script} {args} ran the payload"


def test_trust_flag_opens_a_file_the_user_made(poisoned_run):
    work, _, run_dir, marker = poisoned_run
    result = run(work, "predict.py", "--run", run_dir, "--workers", "0", "--trust-checkpoint")
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # full unpickling, as asked: which is why it is never the default


def hostile_competition(root, label):
    """train/ + train.csv whose second class is `label`, a path that points outside any folder it joins."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    rows = []
    for i in range(8):
        colour_image(i % 2, rng).save(root / "train" / f"im{i}.png")
        rows.append(f"im{i},{'red' if i % 2 == 0 else label}")
    (root / "train.csv").write_text("id,label\n" + "\n".join(rows) + "\n")
    return root


def one_error_line(result):
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("label", ["../../../escaped", "/tmp/escaped-absolute", "a/../../escaped", "..",
                                   "bad\x01"])
def test_hostile_class_labels_write_nothing_outside_the_output_folder(tmp_path, label):
    from superres import ESPCN
    data = hostile_competition(tmp_path / "work" / "comp", label)
    espcn = tmp_path / "work" / "espcn.pt"
    torch.save({"model": ESPCN(2, 8).state_dict(), "scale": 2, "width": 8}, espcn)
    before = sorted(tmp_path.rglob("*"))
    for script, *args in [("data.py", "split", "--data", data, "--out", tmp_path / "work" / "out" / "split"),
                          ("superres.py", "upscale", "--model", espcn, "--data", data,
                           "--out", tmp_path / "work" / "up")]:
        assert "cannot be a folder name" in one_error_line(run(tmp_path / "work", script, *args))
    assert sorted(tmp_path.rglob("*")) == before  # not a file or folder more, inside the tree or out of it
    assert not (tmp_path.parent / "escaped").exists() and not Path("/tmp/escaped-absolute").exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/x-run", "a/../../x", "ok/.."])
def test_a_run_name_stays_under_runs(competition, tmp_path, name):
    result = run(tmp_path, "train.py", "--data", competition, "--name", name, "--epochs", "1",
                 "--workers", "0")
    assert "run name" in one_error_line(result)
    assert not (tmp_path.parent / "x").exists() and not Path("/tmp/x-run").exists()


def test_classes_in_a_gan_checkpoint_are_not_paths(tmp_path):
    from gan import Generator
    gen = Generator(2, 16, 8, 8)
    state = {"generator": gen.state_dict(), "ema": torch.optim.swa_utils.AveragedModel(gen).state_dict(),
             "classes": ["red", "../../../escaped-gan"], "img_size": 16, "epoch": 1,
             "args": {"z_dim": 8, "width": 8}}
    torch.save(state, tmp_path / "last.pt")
    result = run(tmp_path, "gan.py", "sample", "--run", tmp_path / "last.pt", "--per-class", "1", "--out",
                 tmp_path / "samples")
    assert "cannot be a folder name" in one_error_line(result)
    assert not (tmp_path / "samples").exists() and not (tmp_path.parent.parent / "escaped-gan").exists()


@pytest.mark.parametrize("option", ["--img-size 0", "--img-size -5", "--img-size 7", "--img-size 100000",
                                    "--epochs 0", "--epochs -1", "--batch-size 0", "--lr -1", "--lr nan",
                                    "--lr inf", "--workers -1", "--accum 0", "--label-smoothing 2",
                                    "--drop 2", "--ema -1", "--ema 1.5", "--width 0", "--val-fraction 1",
                                    "--train-fraction 0"])
def test_an_out_of_range_option_is_one_argparse_error(option, capsys):
    import train
    with pytest.raises(SystemExit) as stop:
        train.parse_args(option.split())
    assert stop.value.code == 2 and f"argument {option.split()[0]}:" in capsys.readouterr().err


def test_a_diverging_loss_stops_the_run_and_no_nan_model_is_best(competition, tmp_path):
    result = run(tmp_path, "train.py", "--data", competition, "--lr", "1e30", "--epochs", "2",
                 "--img-size", "32", "--workers", "0", "--name", "diverged")
    assert "training diverged" in one_error_line(result) and "epoch 1" in result.stderr
    assert not (tmp_path / "runs" / "diverged" / "best.pt").exists()
