"""Tiny competition folders made on the fly: the tests never need ../shared or a download."""
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("red", "green", "blue")


def colour_image(class_index, rng, size=32):
    """A noisy square tinted by class, with a bright bar whose position varies."""
    a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    a[..., class_index] += 150
    row = rng.integers(0, size - 4)
    a[row:row + 4] = 230
    return Image.fromarray(a)


def make_competition(root, per_class=16, test_images=9, seed=0):
    """root/train/<class>/, a flat test/, sample_submission.csv (shuffled order) and solution.csv."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            colour_image(c, rng).save(root / "train" / name / f"{name}{i}.png")
    (root / "test").mkdir()
    ids, labels = [], []
    for i in range(test_images):
        c = i % len(CLASSES)
        colour_image(c, rng).save(root / "test" / f"{1000 + i}.jpg")
        ids.append(str(1000 + i))
        labels.append(CLASSES[c])
    order = list(range(test_images))
    random.Random(seed).shuffle(order)
    (root / "sample_submission.csv").write_text("id,category\n" + "".join(f"{ids[i]},red\n" for i in order))
    usage = ["Public", "Private"]
    (root / "solution.csv").write_text(
        "id,label,Usage\n" + "".join(f"{ids[i]},{labels[i]},{usage[i % 2]}\n" for i in range(test_images)))
    return root


@pytest.fixture(autouse=True, scope="session")
def fingerprint_cache(tmp_path_factory):
    """In-process scans keep their fingerprint caches out of the project's .cache/."""
    import data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "FINGERPRINT_CACHE", tmp_path_factory.mktemp("fingerprints"))
        yield


@pytest.fixture
def competition(tmp_path):
    return make_competition(tmp_path / "comp")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small CNN trained for 2 epochs on the tiny set, shared by the prediction tests."""
    import train
    work = tmp_path_factory.mktemp("work")
    data = make_competition(work / "comp")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        run_dir = train.main(["--data", str(data), "--epochs", "2", "--img-size", "32", "--batch-size", "8",
                              "--workers", "0", "--block", "4", "--name", "tiny"])
    return work, data, work / run_dir
