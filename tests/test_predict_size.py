"""bench/predict_size.py's report: each run against its own first size, then the mean change per set."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import predict_size  # noqa: E402


def test_changes_are_against_each_run_first_size(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_size, "REPORT", tmp_path / "predict_size.md")

    def row(run, size, val, test):
        return {"run": run, "set": "trashnet6", "trained_at": 160, "aug": "heavy", "size": size,
                "val_acc": val, "test_acc": test}
    predict_size.write_report([row("a", 160, 0.90, 0.90), row("a", 176, 0.91, 0.93),
                            row("b", 160, 0.80, 0.85), row("b", 176, 0.80, 0.84)])
    report = (tmp_path / "predict_size.md").read_text()
    assert "| trashnet6 | a | heavy, 160 px | 176 | 0.9100 | 0.9300 | +1.00 | +3.00 |" in report
    assert "| trashnet6 | b | heavy, 160 px | 160 | 0.8000 | 0.8500 | +0.00 | +0.00 |" in report
    assert "| trashnet6 | 176 | 2 | +0.50 | +1.00 | 1 / 1 / 0 |" in report  # (+3 - 1) / 2 points on test
