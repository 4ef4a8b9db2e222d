"""Every script run as a user runs it: a subprocess, in a fresh working directory."""
import subprocess
import sys

from conftest import ROOT


def run(cwd, script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_whole_workflow_from_split_to_scored_predictions(tmp_path, competition):
    steps = [("eda.py", "--data", competition, "--out", "eda"),
             ("data.py", "split", "--data", competition, "--out", "split", "--block", "4"),
             ("augment.py", "--data", competition, "--aug", "heavy", "--img-size", "48", "--out", "aug.png"),
             ("train.py", "--data", "split", "--epochs", "2", "--img-size", "32", "--batch-size", "8",
              "--workers", "0", "--switch-to-focal-epoch", "2"),
             ("predict.py", "--tta", "3", "--workers", "0")]
    outputs = {}
    for script, *args in steps:
        result = run(tmp_path, script, *args)
        assert result.returncode == 0, f"{script} {args}:\n{result.stdout}\n{result.stderr}"
        outputs[script] = result.stdout
    assert (tmp_path / "eda" / "eda.md").is_file() and (tmp_path / "aug.png").is_file()
    assert "switching the loss from cross-entropy to focal" in outputs["train.py"]
    # split/test/ is labeled, so predict scores it: accuracy with and without TTA
    assert "| all |" in outputs["predict.py"]
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "test_report.md").is_file() and (run_dir / "submission.csv").is_file()


def test_bad_input_is_one_line_never_a_traceback(tmp_path, competition):
    (competition / "train" / "empty").mkdir()
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "best.pt").write_text("not a checkpoint")
    cases = [("train.py", "--data", tmp_path / "missing"),
             ("train.py", "--data", competition),
             ("eda.py", "--data", tmp_path / "missing"),
             ("predict.py", "--run", tmp_path / "runs" / "broken"),
             ("predict.py", "--run", tmp_path / "runs" / "nowhere")]
    for script, *args in cases:
        result = run(tmp_path, script, *args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr
