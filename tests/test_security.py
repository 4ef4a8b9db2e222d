"""No checkpoint loader runs code from a file: every one reads with weights_only=True.

Each poisoned file is a real checkpoint plus one extra key whose unpickling would create a marker
file (a harmless stand-in for a shell command). Every loader must refuse it with one `error:` line
naming --trust-checkpoint, and the marker must not exist afterwards.
"""
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


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
