"""Class balancing, mixing, synthetic images and hard examples (balance.py and the train.py flags)."""
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import balance
import predict
import train
from conftest import CLASSES, colour_image
from utils import UserError, read_csv


def tiny_args(data, *extra):
    return ["--data", str(data), "--img-size", "32", "--batch-size", "8", "--workers", "0", "--block", "4",
            "--epochs", "1", *extra]


def read_split(run_dir):
    with open(run_dir / "split.csv") as f:
        return list(csv.DictReader(f))


def test_sampler_draws_rare_classes_as_often_as_common_ones():
    targets = np.array([0] * 90 + [1] * 10)
    drawn = targets[list(balance.make_sampler(targets, "sampler", seed=0))]
    assert len(drawn) == 100
    draws = np.array([targets[list(balance.make_sampler(targets, "sampler", seed=s))].mean()
                      for s in range(20)])
    assert abs(draws.mean() - 0.5) < 0.05  # a plain shuffle would give 0.1
    assert balance.make_sampler(targets, "none", seed=0) is None


def test_undersampling_draws_the_smallest_class_size_from_every_class_afresh_each_epoch():
    targets = np.array([0] * 50 + [1] * 20 + [2] * 5)
    epochs = [list(balance.make_sampler(targets, "undersample", seed=s)) for s in (1, 2)]
    for drawn in epochs:
        assert np.bincount(targets[drawn]).tolist() == [5, 5, 5] and len(set(drawn)) == 15
    assert set(epochs[0]) != set(epochs[1])


def test_oversampling_repeats_every_class_up_to_the_largest():
    targets = np.array([0] * 10 + [1] * 3 + [2] * 7)
    keep = balance.oversample_indices(targets, seed=0)
    assert np.bincount(targets[keep]).tolist() == [10, 10, 10]
    assert set(keep) == set(range(20))  # every image is still there
    chosen = balance.oversample_indices(targets, seed=0, classes_to_repeat={1}, factor=2)
    assert np.bincount(targets[chosen]).tolist() == [10, 6, 7]


def test_class_balanced_weights_match_the_effective_number_formula():
    counts, beta = np.array([640, 52, 32]), 0.999
    expected = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    weights = balance.effective_number_weights(counts, beta)
    assert np.allclose(weights, expected * 3 / expected.sum()) and np.isclose(weights.sum(), 3)
    assert weights[2] > weights[1] > weights[0]
    assert np.allclose(balance.inverse_frequency_weights(counts) * counts, counts.sum() / 3)
    # beta -> 0 gives equal weights, beta -> 1 inverse frequency (Cui et al.'s two limits)
    assert np.allclose(balance.effective_number_weights(counts, 1e-9), 1)
    inverse = balance.inverse_frequency_weights(counts)
    assert np.allclose(balance.effective_number_weights(counts, 1 - 1e-9), inverse * 3 / inverse.sum(),
                       rtol=1e-3)


def test_logit_adjustment_with_a_uniform_prior_changes_nothing():
    logits = torch.randn(10, 4)
    shift = balance.logit_adjustment([25, 25, 25, 25], tau=1.0)
    assert torch.allclose((logits - shift).softmax(1), logits.softmax(1), atol=1e-6)
    skewed = balance.logit_adjustment([70, 20, 5, 5], tau=1.0)
    adjusted = (logits - skewed).softmax(1)
    assert (adjusted[:, 3] > logits.softmax(1)[:, 3]).all()  # rare classes gain


def test_predict_logit_adjustment_changes_nothing_with_a_uniform_prior(trained_run, tmp_path, monkeypatch):
    work, data, run_dir = trained_run
    monkeypatch.chdir(tmp_path)
    ckpt = torch.load(run_dir / "best.pt", weights_only=False)

    def predictions(counts, *extra):
        copy = tmp_path / f"run{len(counts)}{counts[0]}"
        copy.mkdir(exist_ok=True)
        torch.save({**ckpt, "class_counts": counts}, copy / "best.pt")
        predict.main(["--run", str(copy), "--data", str(data), "--workers", "0", *extra])
        rows = read_csv(copy / "test_predictions.csv")
        return [r["label"] for r in rows], np.array([[float(r[c]) for c in ckpt["classes"]] for r in rows])

    plain_labels, plain_probs = predictions([12, 12, 12])
    labels, probs = predictions([12, 12, 12], "--logit-adjust", "1")
    assert labels == plain_labels and np.allclose(probs, plain_probs, atol=2e-5)  # only float rounding
    _, skewed_probs = predictions([30, 5, 1], "--logit-adjust", "1")
    assert (skewed_probs[:, 2] > plain_probs[:, 2] + 1e-3).any()  # the rarest class gains


def test_focal_loss_takes_mixed_targets():
    torch.manual_seed(0)
    logits, a, b = torch.randn(8, 3), torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    soft = 0.7 * F.one_hot(a, 3).float() + 0.3 * F.one_hot(b, 3).float()
    assert torch.allclose(train.FocalLoss(0.0)(logits, soft), F.cross_entropy(logits, soft), atol=1e-6)
    assert torch.allclose(train.FocalLoss(0.0)(logits, F.one_hot(a, 3).float()), F.cross_entropy(logits, a),
                          atol=1e-6)


@pytest.mark.parametrize("extra", [["--mix", "cutmix"], ["--mix", "mixup", "--balance", "effective"],
                                   ["--balance", "undersample", "--loss", "focal"]])
def test_balancing_and_mixing_runs_train(tmp_path, competition, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    run_dir = train.main(tiny_args(competition, "--name", "b", *extra))
    assert (run_dir / "best.pt").is_file()


def make_synthetic(folder, per_class=5, classes=CLASSES):
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            colour_image(CLASSES.index(name), rng).save(folder / name / f"fake{i}.png")
    return folder


def test_synthetic_images_join_training_only(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synthetic = make_synthetic(tmp_path / "synth", per_class=20)
    run_dir = train.main(tiny_args(competition, "--name", "s", "--synthetic", str(synthetic),
                                   "--synthetic-ratio", "0.5"))
    rows = read_split(run_dir)
    fake = [r for r in rows if str(synthetic) in r["file"]]
    assert fake and all(r["split"] == "synthetic" for r in fake)  # never in val
    real_train = {c: sum(r["split"] == "train" and r["label"] == c for r in rows) for c in CLASSES}
    assert ({c: sum(r["label"] == c for r in fake) for c in CLASSES}
            == {c: round(0.5 * n) for c, n in real_train.items()})
    only = train.main(tiny_args(competition, "--name", "cas", "--synthetic", str(synthetic),
                                "--synthetic-only"))
    assert sum(r["split"] == "synthetic" for r in read_split(only)) == 60


def test_balance_synthetic_tops_up_rare_classes(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(10):  # make blue rare
        (competition / "train" / "blue" / f"blue{i}.png").unlink()
    synthetic = make_synthetic(tmp_path / "synth", per_class=20, classes=("blue",))
    args = train.parse_args(tiny_args(competition, "--balance", "synthetic", "--synthetic", str(synthetic)))
    ds = train.read_dataset(competition)
    real = ds["train"]
    paths, targets, pipeline = balance.training_images(real, ds["classes"],
                                                       balance.BalanceOptions.from_args(args))
    assert np.bincount(targets).tolist() == [16, 16, 16] and pipeline.count("synthetic") == 10
    with pytest.raises(UserError, match="--synthetic DIR"):
        train.main(tiny_args(competition, "--balance", "synthetic"))
    with pytest.raises(UserError, match="unknown classes"):
        train.main(tiny_args(competition, "--heavy-classes", "purple"))


def test_heavy_classes_get_the_heavy_pipeline(competition):
    args = train.parse_args(tiny_args(competition, "--heavy-classes", "green",
                                      "--oversample-classes", "blue"))
    ds = train.read_dataset(competition)
    classes = ds["classes"]
    paths, targets, pipeline = balance.training_images(ds["train"], classes,
                                                       balance.BalanceOptions.from_args(args))
    assert all((k == "heavy") == (classes[t] == "green") for t, k in zip(targets, pipeline))
    assert np.bincount(targets).tolist()[classes.index("blue")] == 32


def test_hard_example_fine_tuning_logs_its_examples(trained_run, tmp_path, monkeypatch):
    work, data, run_dir = trained_run
    monkeypatch.chdir(tmp_path)
    tuned = train.main(tiny_args(data, "--init", str(run_dir), "--hard-fraction", "0.25", "--name", "hard"))
    with open(tuned / "hard_examples.csv") as f:
        hard = list(csv.DictReader(f))
    train_images = sum(r["split"] == "train" for r in read_split(tuned))
    assert len(hard) == round(0.25 * train_images)
    losses = [float(r["loss"]) for r in hard]
    assert losses == sorted(losses, reverse=True)
    with pytest.raises(UserError, match="--init"):
        train.main(tiny_args(data, "--hard-fraction", "0.2"))
