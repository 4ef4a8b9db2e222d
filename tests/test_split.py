"""The validation split on folders named and shaped as real datasets are: it never collapses.

Splits are built in memory (file names, labels, difference hashes, sizes: all the grouping reads),
so many naming schemes and sizes run in a second; one test goes through real image files.
"""
import uuid

import numpy as np
import pytest

import data
from conftest import make_competition

FRACTION = 0.15


def fake_split(names, labels, hashes=None, side=100):
    rng = np.random.default_rng(len(names))
    if hashes is None:  # unrelated pictures: random 64-bit hashes are ~32 bits apart
        hashes = rng.integers(0, 2**63, len(names), dtype=np.int64).astype(np.uint64)
    return data.Split([f"train/{label}/{name}" for name, label in zip(names, labels)], list(labels),
                      np.asarray(hashes, dtype=np.uint64), np.full((len(names), 2), side))


def view_prefixed(counts, rng):
    """back472.jpg, front12.jpg: numbered per view and class, numbers dense from 0."""
    names, labels = [], []
    for c, n in enumerate(counts):
        for i in range(n):
            names.append(f"{rng.choice(['front', 'back', 'side'])}{i}.jpg")
            labels.append(f"model{c:02d}")
    return names, labels


def zero_padded_restarting(counts, rng):
    """0001.png .. in every class, the numbering restarting per class."""
    return ([f"{i:04d}.png" for n in counts for i in range(n)],
            [f"class{c}" for c, n in enumerate(counts) for _ in range(n)])


def uuids(counts, rng):
    return [f"{uuid.UUID(int=int(rng.integers(0, 2**62)))}.jpg" for n in counts for _ in range(n)], \
           [f"c{c}" for c, n in enumerate(counts) for _ in range(n)]


def hex_ids(counts, rng):
    """Kaggle-style random hex ids, many ending in digits (not capture numbers)."""
    return [f"{int(rng.integers(0, 2**32)):08x}.jpg" for n in counts for _ in range(n)], \
           [f"c{c}" for c, n in enumerate(counts) for _ in range(n)]


def burst_numbered(counts, rng):
    """IMG_2946.JPG, one global counter across classes, shots in bursts."""
    names, labels, counter = [], [], 1000
    for c, n in enumerate(counts):
        for i in range(n):
            counter += 1 if i % 8 else int(rng.integers(5, 40))
            names.append(f"IMG_{counter}.JPG")
            labels.append(f"vehicle{c}")
    return names, labels


SCHEMES = [view_prefixed, zero_padded_restarting, uuids, hex_ids, burst_numbered]


def with_cross_class_cluster(split, rng, size=33):
    """One look-alike cluster spanning many classes (plain backgrounds fool a difference hash)."""
    hashes = split.hashes.copy()
    members = rng.choice(len(hashes), size, replace=False)
    hashes[members] = np.uint64(0x0F0F0F0F0F0F0F0F)
    return data.Split(split.paths, split.labels, hashes, split.sizes)


def assert_sound(split, train, held, rows):
    labels = np.asarray(split.labels)
    assert len(train.paths) + len(held.paths) == len(split.paths)
    assert set(train.paths).isdisjoint(held.paths)
    for r in rows:
        assert r["train"] >= 1, r  # never a class without training images
        assert r["in_bounds"] or r["held_out"] == 0, r
        if r["images"] >= 7:  # 15% of 7 is one image: from there on, every class is scored
            assert r["held_out"] >= 1, r
    assert abs(len(held.paths) / len(labels) - FRACTION) < 0.05


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", range(4))
def test_every_class_trains_and_is_held_out_within_bounds(scheme, seed):
    rng = np.random.default_rng(seed)
    counts = [int(c) for c in rng.integers(38, 224, 20)] + [1, 2, 3, 5, 9]  # and tiny classes
    split = with_cross_class_cluster(fake_split(*scheme(counts, rng)), rng)
    train, held, rows = data.holdout_split(split, FRACTION, block=25, seed=seed)
    assert_sound(split, train, held, rows)


def test_cross_class_look_alikes_do_not_merge_classes(capsys):
    """The car make/model failure: numbered blocks of every class joined through a look-alike cluster
    spanning classes became one group of 70% of the images, held out whole; one class had no
    training image at all. (On these images the earlier grouping held out 1,464 of 2,128 images and
    left 6 classes without a training image.)"""
    rng = np.random.default_rng(1)
    counts = [38, 60, 90, 120, 150, 223] * 3 + [40, 45]
    split = fake_split(*view_prefixed(counts, rng))
    for _ in range(3):
        split = with_cross_class_cluster(split, rng)
    grouping = data.duplicate_groups(split, block=25, max_share=FRACTION)
    labels = np.asarray(split.labels)
    for g in np.unique(grouping.groups):
        assert len(set(labels[grouping.groups == g])) == 1  # a group never spans two classes
    assert grouping.conflicts  # the cluster's cross-class pairs are reported, not merged
    train, held, rows = data.holdout_split(split, FRACTION, block=25, seed=0)
    assert_sound(split, train, held, rows)
    assert "carry different labels" in capsys.readouterr().out


def test_groups_are_capped_number_blocks_give_way_first():
    # 40 images of one class: 0..39 numbered, and 0..4 exact look-alikes; the cap is 15% of 40 = 6
    names = [f"{i}.jpg" for i in range(40)] + [f"{i}.jpg" for i in range(40)]
    labels = ["a"] * 40 + ["b"] * 40
    hashes = np.random.default_rng(0).integers(0, 2**63, 80, dtype=np.int64).astype(np.uint64)
    hashes[[0, 10, 20, 30, 39]] = 7
    grouping = data.duplicate_groups(fake_split(names, labels, hashes), block=25, max_share=FRACTION)
    sizes = np.bincount(grouping.groups)
    assert sizes.max() <= 6 and grouping.refused > 0
    assert len({grouping.groups[i] for i in (0, 10, 20, 30, 39)}) == 1  # hash links came first


def test_capture_numbers_are_told_from_ids():
    assert data.capture_number("IMG_0042") == ("IMG_", 42)
    assert data.capture_number("back472") == ("back", 472)
    assert data.capture_number("0007") == ("", 7)
    for name in ("10065e16", "3f2a9c1e-0b1d-4c5e-9f00-1234", "car (12)", "photo"):
        assert data.capture_number(name) is None


def test_group_parts_makes_balanced_leak_free_folds():
    rng = np.random.default_rng(1)
    labels = rng.choice(["a", "b", "c"], 600)
    groups = rng.integers(0, 150, 600)  # groups of about 4
    groups = np.array([f"{label}{g}" for label, g in zip(labels, groups)])
    folds = data.group_parts(labels, groups, [1] * 5, seed=0)
    assert np.array_equal(folds, data.group_parts(labels, groups, [1] * 5, seed=0))
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    for c in "abc":
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 2 * 8  # within two groups of each other


def test_holdout_on_real_files_keeps_copies_together(tmp_path):
    comp = make_competition(tmp_path / "c", per_class=40)
    for name in ("red", "green", "blue"):  # exact copies under random names: must land beside their original
        for i in range(0, 40, 5):
            src = comp / "train" / name / f"{name}{i}.png"
            (comp / "train" / name / f"{uuid.uuid4()}.png").write_bytes(src.read_bytes())
    train = data.read_dataset(comp)["train"]
    kept, held, rows = data.holdout_split(train, 0.2, block=0, seed=3)
    side = {p: "train" for p in kept.paths} | {p: "held" for p in held.paths}
    digest = {}
    for p in train.paths:
        digest.setdefault(p.read_bytes(), set()).add(side[p])
    assert all(len(sides) == 1 for sides in digest.values())
    assert all(r["held_out"] >= 1 for r in rows)
