"""bench/vs_plain.py's bookkeeping: the interleaved order, the two curves, time to the reference's
accuracy and the time-to-accuracy figure (the benchmark itself runs on ../shared, not in tests)."""
import json
import sys
from pathlib import Path

import pytest

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
    log = [{"epoch": str(epoch), "val_acc": acc, "seconds": seconds}  # log.csv rows, as csv reads them
           for epoch, acc, seconds in ((1, "0.6", "4.0"), (2, "0.95", "4.5"), (3, "0.97", "4.5"))]
    assert vs_plain.our_curve(log) == [[4.0, 0.6], [8.5, 0.95], [13.0, 0.97]]
    row = {"set": "tiny", "kind": "scratch", "seed": 0, "reference_acc": 0.9, "acc_tta": 0.96,
           "reference_curve": vs_plain.reference_curve(output), "curve": vs_plain.our_curve(log)}
    assert vs_plain.time_to_reference([row]) == f"{8.5 / 21:.2f}"  # 0.95 >= 0.9 after 8.5 of 21 s
    assert vs_plain.time_to_reference([{**row, "reference_acc": 0.99}]) == "not reached (1 of 1 seeds)"
    assert vs_plain.time_to_reference([{"reference_acc": 0.9}]) == "-"  # rows measured before curves
    assert vs_plain.reference_at_half([row]) == "0.5000"  # epoch 1 (10 s) is within half of 21 s
    late = {**row, "seed": 1, "reference_curve": [[30.0, 0.7], [40.0, 0.8]]}  # no epoch within 20 s: 0
    assert vs_plain.reference_at_half([row, late]) == "0.2500 ± 0.3536"
    assert vs_plain.reference_at_half([row, row]) == "0.5000"  # one reference beside two recipes counts once
    assert vs_plain.reference_at_half([{"reference_acc": 0.9}]) == "-"
    monkeypatch.setattr(vs_plain, "PLOTS", tmp_path / "plots")
    candidate = {**row, "recipe_name": "short", "curve": [[3.0, 0.7], [6.0, 0.93]], "acc_tta": 0.94}
    path = vs_plain.plot_time_to_accuracy([row, {**row, "seed": 1}, candidate], "tiny")
    assert path == tmp_path / "plots" / "tiny.png" and path.stat().st_size > 1000
    assert vs_plain.plot_time_to_accuracy([{"set": "tiny"}], "tiny") is None


def test_a_candidate_recipe_is_a_row_of_its_own_and_stays_out_of_the_headline(tmp_path, monkeypatch):
    assert vs_plain.recipe("p128=--epochs 5 --progressive 128") == ("p128", ["--epochs", "5", "--progressive",
                                                                             "128"])
    calls = []
    monkeypatch.setattr(vs_plain, "run_reference", lambda *a, **k: {"reference_acc": 0.9,
                                                                    "reference_seconds": 100,
                                                                    "reference_when": "then"})
    monkeypatch.setattr(vs_plain, "run_ours", lambda data, kind, seed, tag, extra: calls.append((tag, extra))
                        or {"acc": 0.95, "acc_tta": 0.96, "tta_views": ["plain"], "train_seconds": 40,
                            "when": "now", "kept_val_acc": 0.97, "machine": "AMD EPYC (AVX2)",
                            "recipe": "smallcnn, 5 epochs"})
    candidate = vs_plain.compare("vehicles6", "scratch", 1, recipe=("short", ["--epochs", "5"]))
    assert calls == [("vehicles6-scratch-short-s1", ["--epochs", "5"])]
    assert vs_plain.key(candidate) == ("vehicles6", "scratch", 1, "short")
    default = {**candidate, "kept_val_acc": 0.98, "train_seconds": 80}
    del default["recipe_name"], default["recipe_args"]
    readme = []
    monkeypatch.setattr(vs_plain, "REPORT", tmp_path / "vs_plain.md")
    monkeypatch.setattr(vs_plain, "PLOTS", tmp_path / "plots")
    monkeypatch.setattr(vs_plain, "replace_in_readme", lambda marker, rows: readme.extend(rows))
    vs_plain.write_report([default, candidate])
    report = (tmp_path / "vs_plain.md").read_text()
    main_table, candidates = report.split("## Candidate recipes")
    assert "--epochs 5" not in main_table and len(readme) == 3 and "80 s / 100 s = 0.80" in readme[2]
    assert "| vehicles6 | scratch | default | 1 | 0.9800 |" in candidates
    assert "| scratch | short: `--epochs 5` | 1 | 0.9700 | 0.9000 | - | 0.9600 | 40 | 0.40 |" in candidates
    assert "vehicles6 scratch short seed 1 then, now (AMD EPYC (AVX2))" in candidates
    former = {**candidate, "recipe_name": "default-until-dec5", "recipe_args": ""}  # kept under a name
    assert "| scratch | default-until-dec5 | 1 |" in "\n".join(vs_plain.candidate_table([former]))
    verdict = candidates.split("## Half the time")[1]  # both reach 0.9; only the candidate in 0.5
    short = "short (1 seed, AMD EPYC (AVX2))"
    assert f"| vehicles6 | scratch | {short} | 0.40 | {short} | 0.9600 / 0.9000 | - |" in verdict
    slow = [{**default, "acc_tta": 0.85}]  # below the plain script, over the time: nothing reached
    assert vs_plain.verdict_table(slow)[-1] == "| vehicles6 | scratch | none | - | none measured | - | - |"


def test_reuse_reference_takes_the_latest_reference_of_the_set_kind_and_seed():
    rows = [{"set": "a", "kind": "scratch", "seed": 0, "reference_when": "2026-12-02 07:00"},
            {"set": "a", "kind": "scratch", "seed": 0, "recipe_name": "e15", "reference_when": "2026-12-05"},
            {"set": "a", "kind": "scratch", "seed": 1, "reference_when": "2026-12-06 00:00"}]
    assert vs_plain.latest_reference(rows, ("a", "scratch", 0, "e15p32")) is rows[1]
    assert vs_plain.latest_reference(rows, ("a", "pretrained", 0, None)) is None


def test_the_verdict_counts_the_shared_sets_each_default_reached():
    row = {"kind": "scratch", "seed": 0, "acc_tta": 0.95, "reference_acc": 0.9, "train_seconds": 40,
           "reference_seconds": 100}
    results = [{**row, "set": "vehicles6"}, {**row, "set": "trashnet6", "train_seconds": 60},
               {**row, "set": "utilityvehicles10", "recipe_name": "fast"}]  # a candidate is not the default
    scratch = [line for line in vs_plain.default_verdict(results) if "scratch" in line]
    assert scratch == ["- The scratch default reached on 1 of 3 shared sets: vehicles6 0.9500 / 0.9000 at "
                       "0.40: reached, gap +0.0500; utilityvehicles10 not run; trashnet6 0.9500 / 0.9000 at "
                       "0.60: time short, gap +0.0500."]


def test_one_recipe_on_every_shared_set_is_what_a_default_needs():
    def row(name, recipe, acc_tta, seconds, seed=0):
        return {"set": name, "kind": "pretrained", "seed": seed, "recipe_name": recipe, "acc_tta": acc_tta,
                "reference_acc": 0.9, "train_seconds": seconds, "reference_seconds": 100}
    results = [row(name, "fast", 0.95, 40) for name in vs_plain.SHARED_SETS]
    results[0]["acc_tta"] = 0.900004  # ties the plain script's 0.9000 at the 4 decimals it prints
    results += [row("vehicles6", "slow", 0.95, 60), row("trashnet6", "slow", 0.85, 40),
                row("trashnet6", "slow", 0.96, 40, seed=1), row("digits", "slow", 0.99, 10)]
    lines = vs_plain.every_set_table(results)
    assert lines[-2].startswith("| pretrained | fast | 0.9000 / 0.9000 at 0.40: reached |")
    assert lines[-2].endswith("| 3 of 3 |")
    slow = dict(zip(["kind", "recipe", *vs_plain.SHARED_SETS], lines[-1].strip("| ").split(" | ")))
    assert slow["vehicles6"] == "0.9500 / 0.9000 at 0.60: time short"
    assert slow["trashnet6"] == "0.9050 / 0.9000 at 0.40, 2 seeds: reached"  # the mean of 0.85 and 0.96
    assert slow["utilityvehicles10"] == "not run" and lines[-1].endswith("| 1 of 3 |")  # digits is not shared


def test_what_bounds_a_set_the_default_did_not_reach():
    def row(recipe_name, recipe, acc_tta, seconds, curve, name="trashnet6"):
        return {"set": name, "kind": "scratch", "seed": 0, "recipe_name": recipe_name, "recipe": recipe,
                "acc_tta": acc_tta, "reference_acc": 0.8, "train_seconds": seconds, "reference_seconds": 120,
                "reference_when": "then", "machine": "AMD EPYC (AVX2), 0 loader worker(s)",
                "reference_curve": [[50.0, 0.7], [100.0, 0.8]], "curve": curve}
    full_size = row("e4", "smallcnn, 64 px, 4 epochs, batch 32", 0.75, 50, [[20.0, 0.6], [40.0, 0.7]])
    grown = row("p32", "smallcnn, 64 px, 8 epochs, batch 32, from 32 px", 0.78, 54, [[2.0, 0.5], [32.0, 0.7]])
    cheaper = row("pool2", "poolcnn, 64 px, 2 epochs, batch 32", 0.7, 20, [[5.0, 0.5], [10.0, 0.6]])
    frozen = {**row("f2", "smallcnn, 64 px, 2 epochs, batch 32", 0.7, 20, [[1.0, 0.5], [2.0, 0.6]]),
              "recipe_args": "--freeze-stages 2"}  # its epochs are cheaper than the default's: left out
    elsewhere = {**full_size, "set": "vehicles6", "acc_tta": 0.81}  # the default reached there: no row
    del elsewhere["recipe_name"]
    lines = vs_plain.bound_table([full_size, grown, cheaper, frozen, elsewhere])
    assert len(lines) == 8 and lines[-1].startswith("| trashnet6 | scratch | 10 at 64 px | ")
    cells = lines[-1].strip("| ").split(" | ")
    assert cells[6] == "not run"  # no run on every training image
    # per architecture, our last epoch against the plain script's mean of 50 s: smallcnn 20 and 30 s
    # (median 25 s), (120 / 2 - 10 s start-up) / 20 s = 2.5 and (60 - 22) / 30 = 1.27 epochs in half its
    # time (median 1.9); poolcnn 5 s, (60 - 10) / 5 = 10
    assert cells[3:6] == ["poolcnn: 5.0 s against 50.0 s (0.10), 1 run; smallcnn: 25.0 s against 50.0 s "
                          "(0.50), 2 runs", "poolcnn: 10.0; smallcnn: 1.9",
                          "p32 (1 seed, AMD EPYC (AVX2)): 0.7800 / 0.8000, gap -0.0200"]
    assert cells[7] == "0.8000-0.8000 (1 run)"  # every row beside one reference run
    every_image = {**row("all", "smallcnn, 64 px, 4 epochs, batch 32", 0.79, 58, None),
                   "recipe_args": "--val-fraction 0"}  # no validation: no curve, no epoch measured
    cells = vs_plain.bound_table([full_size, grown, every_image])[-1].strip("| ").split(" | ")
    assert cells[3] == "smallcnn: 25.0 s against 50.0 s (0.50), 2 runs"
    assert cells[5:7] == ["all (1 seed, AMD EPYC (AVX2)): 0.7900 / 0.8000, gap -0.0100",
                          "0.7900 / 0.8000 at 0.48: accuracy short, gap -0.0100"]
    assert vs_plain.gap([grown, {**grown, "acc_tta": 0.80}]) == "gap -0.0100 ± 0.0200 (2 SE)"
    assert vs_plain.bound_table([frozen])[-1].split(" | ")[3] == "not measured (no run at 64 px without " \
                                                                 "frozen stages)"
    # a candidate that reached does not answer for the default command
    assert vs_plain.bound_table([{**cheaper, "acc_tta": 0.9}])[-1].startswith("| trashnet6 | scratch |")
    assert vs_plain.bound_table([elsewhere])[-1].startswith("The default command reached on every shared")


def test_repredict_keeps_the_training_and_tests_at_the_size_train_py_derives_now(tmp_path, monkeypatch):
    monkeypatch.setattr(vs_plain, "OUT", tmp_path)
    run = tmp_path / "trashnet6-pretrained-f2-s1"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    config = {"arch": "efficientnet_lite0", "img_size": 160, "aug": "heavy", "epochs": 6, "batch_size": 32}
    (run / "config.json").write_text(json.dumps({"args": config}))  # trained before --test-size
    metrics = {"acc": 0.91, "acc_tta": 0.93, "tta_view_names": ["plain"]}
    (run / "test_metrics.json").write_text(json.dumps(metrics))
    commands = []
    monkeypatch.setattr(vs_plain, "timed", lambda command, log: commands.append(command) or (12.3, ""))
    row = {"set": "trashnet6", "kind": "pretrained", "seed": 1, "recipe_name": "f2", "acc": 0.9,
           "acc_tta": 0.9, "train_seconds": 200, "curve": [[1.0, 0.5]],
           "recipe": "efficientnet_lite0, 160 px, 6 epochs, batch 32"}
    again = vs_plain.repredict(row)
    assert commands[0][-4:] == ["--tta", "8", "--img-size", "176"]  # 10% over 160 px after --aug heavy
    assert (again["acc"], again["acc_tta"], again["predict_seconds"]) == (0.91, 0.93, 12)
    assert again["train_seconds"] == 200 and again["curve"] == row["curve"] and "predicted_when" in again
    assert again["recipe"] == "efficientnet_lite0, 160 px, 6 epochs, batch 32, tested at 176 px"
    (run / "config.json").write_text(json.dumps({"args": {**config, "test_size": 160}}))  # --test-size 160
    assert vs_plain.repredict(row)["recipe"].endswith("batch 32") and commands[1][-1] == "160"
    with pytest.raises(SystemExit, match="run it again"):
        vs_plain.repredict({**row, "seed": 2})


def test_ours_without_validation_has_no_curve_and_keeps_the_last_epoch(tmp_path, monkeypatch):
    """--recipe "all=--val-fraction 0" trains on every image, as the plain script does: its log.csv has no
    validation columns, so the row has no curve and no validation accuracy, and best.pt is the last epoch."""
    monkeypatch.setattr(vs_plain, "OUT", tmp_path)
    config = {"arch": "efficientnet_lite0", "img_size": 160, "aug": "heavy", "epochs": 2, "batch_size": 32,
              "test_size": 176, "monitor": "val_loss", "workers": 1}

    def fake_timed(command, log):  # train.py writes the run folder, predict.py its test metrics
        run = tmp_path / "trashnet6-pretrained-all"
        if "train.py" in command:
            run.mkdir()
            (run / "config.json").write_text(json.dumps({"args": config, "environment": {}}))
            (run / "log.csv").write_text(log_csv)
        else:
            (run / "test_metrics.json").write_text(json.dumps({"acc": 0.9, "acc_tta": 0.92,
                                                               "tta_view_names": ["plain"]}))
        return 10.0, ""

    monkeypatch.setattr(vs_plain, "timed", fake_timed)
    log_csv = "epoch,lr,train_acc,seconds\n1,0.001,0.5,40\n2,0.0001,0.8,50\n"
    row = vs_plain.run_ours("D", "pretrained", 0, "trashnet6-pretrained-all", ["--val-fraction", "0"])
    assert row["kept_epoch"] == 2 and "curve" not in row and "kept_val_acc" not in row
    assert row["acc_tta"] == 0.92 and row["recipe"].endswith("tested at 176 px")
    log_csv = ("epoch,lr,train_acc,val_loss,val_acc,val_f1,seconds\n1,0.001,0.5,0.4,0.9,0.9,40\n"
               "2,0.0001,0.8,0.5,0.85,0.85,50\n")  # epoch 1 has the lower validation loss
    row = vs_plain.run_ours("D", "pretrained", 0, "trashnet6-pretrained-all")
    assert (row["kept_epoch"], row["kept_val_acc"], row["curve"]) == (1, 0.9, [[40.0, 0.9], [90.0, 0.85]])
