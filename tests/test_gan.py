"""Tests of gan.py: the networks, DiffAugment, the Frechet distance, and the CLI end to end on tiny data.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_gan.py -q
"""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gan  # noqa: E402

GAN_PY = Path(gan.__file__).resolve()
CLASSES = {"a": (220, 40, 40), "b": (40, 200, 40), "c": (40, 40, 220)}


def run_gan(cwd, *args):
    """gan.py as a user runs it, in cwd so its runs/ folder lands there, not in the repo."""
    result = subprocess.run([sys.executable, str(GAN_PY), *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def read_log(run_dir):
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes x 10 noisy 16x16 images of one colour each, as train/<class>/*.png."""
    root = tmp_path_factory.mktemp("gan")
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        folder = root / "tiny" / "train" / name
        folder.mkdir(parents=True)
        for i in range(10):
            pixels = np.array(colour) * rng.uniform(0.6, 1.0) + rng.normal(0, 15, (16, 16, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tiny):
    """A 2-epoch run with Frechet distances after both epochs (the script computes 1, 2 and the last)."""
    out = run_gan(tiny, "--data", "tiny", "--img-size", 32, "--epochs", 2, "--block", 0, "--name", "tiny",
                  "--fd-images", 30)
    return tiny / "runs" / "gan-tiny", out


@pytest.mark.parametrize("img_size", [32, 64])
def test_output_shapes(img_size):
    G, D = gan.Generator(5, img_size, z_dim=16, width=8), gan.Discriminator(5, img_size, width=8)
    labels = torch.tensor([0, 1, 2, 4])
    images = G(torch.randn(4, 16), labels)
    assert images.shape == (4, 3, img_size, img_size)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images, labels).shape == (4,)


def test_labels_change_generator_and_discriminator():
    torch.manual_seed(0)
    G, D = gan.Generator(3, 32, z_dim=16, width=8).eval(), gan.Discriminator(3, 32, width=8)
    for module in G.modules():  # every class starts at gain 1, bias 0; give them the spread training would
        if isinstance(module, gan.ConditionalBatchNorm):
            torch.nn.init.normal_(module.bias.weight)
    z = torch.randn(1, 16).repeat(3, 1)  # the same noise for every class
    images = G(z, torch.arange(3))
    assert (images[0] - images[1]).abs().max() > 1e-3
    assert (images[1] - images[2]).abs().max() > 1e-3
    same_image = images[:1].detach().repeat(3, 1, 1, 1)
    scores = D(same_image, torch.arange(3))
    assert scores.unique().numel() == 3  # the projection term depends on the class


def test_diff_augment_is_random_and_differentiable():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    out = gan.diff_augment(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    def augment_with_fixed_draws(images):
        # the same brightness, shifts and holes on every call, so finite differences apply
        torch.manual_seed(1)
        return gan.diff_augment(images)

    small = torch.rand(2, 3, 8, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(augment_with_fixed_draws, (small,))


def test_frechet_distance_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 12))
    fake = rng.normal(1.0, 2.0, size=(9, 12))  # fewer samples than dimensions, as per class in practice
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    direct = (((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f)
              - 2 * np.trace(scipy.linalg.sqrtm(cov_r @ cov_f)).real)
    assert gan.frechet_distance(real, fake) == pytest.approx(direct, rel=1e-6)
    assert gan.frechet_distance(real, real) == pytest.approx(0, abs=1e-6)


def test_training_writes_run_folder(trained):
    run_dir, out = trained
    for name in ("config.json", "log.csv", "losses.png", "last.pt", "samples_epoch002.png"):
        assert (run_dir / name).is_file(), name
    rows = read_log(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for row in rows:
        assert np.isfinite(float(row["d_loss"])) and np.isfinite(float(row["g_loss"]))
        assert all(float(row[key]) > 0 for key in ("fd", "fd_a", "fd_b", "fd_c"))
    assert "NOT comparable with Inception-FID" in out
    state = torch.load(run_dir / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["classes"] == list(CLASSES) and state["img_size"] == 32


def test_sample_writes_only_requested_classes(trained, tiny):
    run_gan(tiny, "sample", "--per-class", 3, "--out", "extra", "--classes", "a,b")  # default: the latest run
    out = tiny / "extra"
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    for name in ("a", "b"):
        files = sorted((out / name).glob("*.png"))
        assert len(files) == 3
        assert Image.open(files[0]).size == (32, 32)


def test_sample_rejects_unknown_class(trained, tiny):
    result = subprocess.run([sys.executable, str(GAN_PY), "sample", "--run", str(trained[0]),
                             "--per-class", "1", "--out", "bad", "--classes", "zebra"],
                            cwd=tiny, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error:") and "zebra" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_continues_from_saved_epoch(trained, tiny):
    run_dir = trained[0]
    out = run_gan(tiny, "--resume", run_dir, "--epochs", 3)
    assert "after epoch 2" in out
    rows = read_log(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[-1]["fd"]) > 0  # the last epoch always gets a distance
    assert torch.load(run_dir / "last.pt", weights_only=False)["epoch"] == 3
    assert (run_dir / "samples_epoch003.png").is_file()


def test_balance_classes_draws_every_class_equally_often():
    labels = torch.tensor([0] * 180 + [1] * 15 + [2] * 5)
    torch.manual_seed(0)
    assert sorted(gan.epoch_order(labels, False).tolist()) == list(range(200))  # one pass, each image once
    counts = torch.bincount(labels[gan.epoch_order(labels, True)], minlength=3)
    assert counts.sum() == 200 and counts.min() > 45 and counts.max() < 90  # about 67 each, not 180/15/5


def test_train_fraction_takes_the_images_train_py_takes(tiny, monkeypatch):
    """A low-data GAN must see exactly the real images of the classifiers it helps, whatever their seed."""
    import train
    monkeypatch.chdir(tiny)
    common = ["--data", "tiny", "--block", "0", "--train-fraction", "0.5"]
    split, _ = gan.training_split(gan.parse_train_args(common + ["--seed", "3"]))
    gan_images = sorted(zip(split.labels, map(str, split.paths)))
    for classifier_seed in (0, 1):
        run_dir = train.main(common + ["--split-seed", "3", "--seed", str(classifier_seed), "--epochs", "1",
                                       "--img-size", "32", "--workers", "0",
                                       "--name", f"fraction{classifier_seed}"])
        with open(run_dir / "split.csv", newline="") as f:
            trained_on = sorted((r["label"], r["file"]) for r in csv.DictReader(f) if r["split"] == "train")
        assert trained_on == gan_images and len(trained_on) < 30
