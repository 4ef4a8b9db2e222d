"""k-fold training, out-of-fold predictions, ensembles, stacking and pseudo-labels on a tiny set."""
import csv
import json
import shutil

import numpy as np
import pytest

import data
import ensemble
import predict
import train
from conftest import make_competition


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def kfold(tmp_path_factory):
    """3 folds of a small CNN, 2 epochs each, predicted with TTA."""
    work = tmp_path_factory.mktemp("kfold")
    comp = make_competition(work / "comp", per_class=24)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        parent = train.main(["--data", str(comp), "--folds", "3", "--epochs", "2", "--workers", "0",
                             "--block", "0", "--name", "kf"])
        predict.main(["--run", str(parent), "--tta", "3", "--workers", "0"])
    return work, comp, work / parent


def test_folds_are_deterministic_leak_free_and_cover_every_image_once(tmp_path):
    comp = make_competition(tmp_path / "c", per_class=30)
    for name in ("red", "green", "blue"):  # copies: a group that must stay in one fold
        for i in range(0, 30, 3):
            (comp / "train" / name / f"copy{i}.png").write_bytes(
                (comp / "train" / name / f"{name}{i}.png").read_bytes())
    split = data.read_dataset(comp)["train"]
    parts = [data.fold_split(split, 4, k, 25, seed=7)[3] for k in range(4)]
    assert all(np.array_equal(parts[0], p) for p in parts)  # one assignment, whichever fold asks
    held = [set(data.fold_split(split, 4, k, 25, seed=7)[1].paths) for k in range(4)]
    assert sum(len(h) for h in held) == len(split.paths) and set().union(*held) == set(split.paths)
    fold_of = dict(zip(split.paths, parts[0]))
    for path in split.paths:
        if path.name.startswith("copy"):
            original = path.with_name(f"{path.parent.name}{path.stem[4:]}.png")
            assert fold_of[path] == fold_of[original]


def test_oof_predictions_cover_every_training_image_with_its_fold(kfold):
    _, comp, parent = kfold
    folds = {r["file"]: r["fold"] for r in read_rows(parent / "folds.csv")}
    oof = read_rows(parent / "oof_predictions.csv")
    assert sorted(r["file"] for r in oof) == sorted(folds) and len(oof) == 72
    assert all(r["fold"] == folds[r["file"]] for r in oof)
    assert all(r["label"] == r["file"].split("/")[-2] for r in oof)  # the label is the image's own
    cv = json.loads((parent / "cv.json").read_text())
    preds = [max(("blue", "green", "red"), key=lambda c: float(r[c])) for r in oof]
    assert cv["oof_acc"] == pytest.approx(np.mean([p == r["label"] for p, r in zip(preds, oof)]))
    tta_oof = read_rows(parent / "oof_tta_predictions.csv")
    assert sorted(r["id"] for r in tta_oof) == sorted(folds)


def test_a_parent_predicts_the_average_of_its_folds(kfold, tmp_path, monkeypatch):
    work, _, parent = kfold
    monkeypatch.chdir(work)
    probs = []
    for k in range(3):
        predict.main(["--run", str(parent / f"fold-{k}"), "--workers", "0", "--out", str(tmp_path / f"f{k}")])
        probs.append({r["id"]: [float(r[c]) for c in ("blue", "green", "red")]
                      for r in read_rows(tmp_path / f"f{k}" / "test_predictions.csv")})
    predict.main(["--run", str(parent), "--workers", "0", "--out", str(tmp_path / "all")])
    for r in read_rows(tmp_path / "all" / "test_predictions.csv"):
        expected = np.mean([p[r["id"]] for p in probs], axis=0)
        assert np.allclose([float(r[c]) for c in ("blue", "green", "red")], expected, atol=1e-4)


def test_an_ensemble_of_one_run_is_that_run(kfold, tmp_path, monkeypatch):
    work, _, parent = kfold
    monkeypatch.chdir(work)
    out = ensemble.main([str(parent), "--out", str(tmp_path / "one")])
    mine, theirs = read_rows(out / "test_predictions.csv"), read_rows(parent / "test_predictions.csv")
    assert [(r["id"], r["label"]) for r in mine] == [(r["id"], r["label"]) for r in theirs]
    assert (out / "submission.csv").read_text() == (parent / "submission.csv").read_text()


def test_weights_and_stacking_never_read_test_labels(kfold, tmp_path, monkeypatch):
    work, comp, parent = kfold
    monkeypatch.chdir(work)
    wrong = tmp_path / "wrong"
    shutil.copytree(comp, wrong)
    rows = read_rows(comp / "solution.csv")
    labels = [r["label"] for r in rows][::-1]  # other answers for the same ids
    with open(wrong / "solution.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": label} for r, label in zip(rows, labels))
    for extra in (["--weights", "oof"], ["--stack", "logreg"]):
        a = ensemble.main([str(parent), str(parent), *extra, "--out", str(tmp_path / "a")])
        b = ensemble.main([str(parent), str(parent), *extra, "--data", str(wrong),
                           "--out", str(tmp_path / "b")])
        cv_a, cv_b = (json.loads((d / "cv.json").read_text()) for d in (a, b))
        assert cv_a == cv_b  # weights, OOF score and threshold: the same whatever the test labels say
        assert (a / "test_predictions.csv").read_text() == (b / "test_predictions.csv").read_text()
        assert sum(cv_a["weights"]) == pytest.approx(1)


def test_pseudo_labels_join_training_only(kfold, tmp_path, monkeypatch):
    work, comp, parent = kfold
    monkeypatch.chdir(work)
    run_dir = work / train.main(["--data", str(comp), "--epochs", "1", "--workers", "0", "--name", "pseudo",
                                 "--pseudo", str(parent), "--pseudo-threshold", "0"])
    split = read_rows(run_dir / "split.csv")
    pseudo = [r for r in split if r["split"] == "pseudo"]
    assert len(pseudo) == 9 and all("/test/" in r["file"] for r in pseudo)
    assert not [r for r in split if r["split"] == "val" and "/test/" in r["file"]]
