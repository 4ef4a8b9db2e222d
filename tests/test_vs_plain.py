"""bench/vs_plain.py's bookkeeping: the interleaved order, the two curves, time to the reference's
accuracy and the time-to-accuracy figure (the benchmark itself runs on ../shared, not in tests)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import vs_plain  # noqa: E402


def test_the_sides_alternate_from_seed_to_seed(monkeypatch):
    calls = []
    monkeypatch.setattr(vs_plain, "run_reference", lambda *a, **k: calls.append("reference") or {})
    monkeypatch.setattr(vs_plain, "run_ours", lambda *a, **k: calls.append("ours") or {})
    orders = [vs_plain.compare("vehicles6", "scratch", seed)["order"] for seed in range(3)]
    assert calls == ["reference", "ours", "ours", "reference", "reference", "ours"]
    assert orders == ["reference first", "ours first", "reference first"]


def test_curves_time_to_accuracy_and_the_figure(tmp_path, monkeypatch):
    output = "warning: x\nepoch 1: test accuracy 0.5000, 10 s\nepoch 2: test accuracy 0.9000, 21 s\n"
    assert vs_plain.reference_curve(output) == [[10.0, 0.5], [21.0, 0.9]]
    log = tmp_path / "log.csv"
    log.write_text("epoch,val_acc,seconds\n1,0.6,4.0\n2,0.95,4.5\n3,0.97,4.5\n")
    assert vs_plain.our_curve(log) == [[4.0, 0.6], [8.5, 0.95], [13.0, 0.97]]
    row = {"set": "tiny", "kind": "scratch", "seed": 0, "reference_acc": 0.9, "acc_tta": 0.96,
           "reference_curve": vs_plain.reference_curve(output), "curve": vs_plain.our_curve(log)}
    assert vs_plain.time_to_reference([row]) == f"{8.5 / 21:.2f}"  # 0.95 >= 0.9 after 8.5 of 21 s
    assert vs_plain.time_to_reference([{**row, "reference_acc": 0.99}]) == "not reached (1 of 1 seeds)"
    assert vs_plain.time_to_reference([{"reference_acc": 0.9}]) == "-"  # rows measured before curves
    monkeypatch.setattr(vs_plain, "PLOTS", tmp_path / "plots")
    path = vs_plain.plot_time_to_accuracy([row, {**row, "seed": 1}], "tiny")
    assert path == tmp_path / "plots" / "tiny.png" and path.stat().st_size > 1000
    assert vs_plain.plot_time_to_accuracy([{"set": "tiny"}], "tiny") is None
