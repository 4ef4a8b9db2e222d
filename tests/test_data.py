import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
import eda
from conftest import make_competition
from utils import UserError


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    im = src.convert("I;16") if mode == "I;16" else src.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png")
    im.save(path)
    a = data.load_rgb(path)
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8
    assert a.flags.writeable  # torch.from_numpy (ToTensorV2) warns on a read-only array


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert data.load_rgb(tmp_path / "r.jpg").shape == (40, 20, 3)


def test_sixteen_bit_range_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 60000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(a).save(tmp_path / "deep.png")
    rgb = data.load_rgb(tmp_path / "deep.png")
    assert rgb.max() == 255 and rgb.min() == 0 and len(np.unique(rgb)) > 30


def test_unreadable_images_are_skipped_with_a_warning(competition):
    (competition / "train" / "red" / "broken.png").write_bytes(b"not an image")
    good = competition / "train" / "red" / "red0.png"
    (competition / "train" / "red" / "truncated.jpg").write_bytes(_jpeg_bytes(good)[:200])
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        ds = data.read_dataset(competition)
    assert {str(w.message).split(":")[0] for w in record} == {
        f"skipping unreadable image {competition}/train/red/broken.png",
        f"skipping unreadable image {competition}/train/red/truncated.jpg"}
    assert len(ds["train"].paths) == 48


def _jpeg_bytes(path):
    buf = io.BytesIO()
    Image.open(path).save(buf, format="JPEG")
    return buf.getvalue()


def test_layout_errors_are_one_line(tmp_path, competition):
    with pytest.raises(UserError, match="data folder not found"):
        data.resolve_data_dir(str(tmp_path / "nowhere"))
    (competition / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="class folder .*empty has no images"):
        data.read_dataset(competition)
    with pytest.raises(UserError, match="has no train/ folder"):
        data.read_dataset(tmp_path)


def test_flat_train_folder_with_csv(tmp_path, competition):
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    rows = []
    for path in sorted((competition / "train").glob("*/*.png")):
        (flat / "train" / path.name).write_bytes(path.read_bytes())
        rows.append(f"{path.stem},{path.parent.name}")  # ids without extension, as Kaggle often gives them
    (flat / "train.csv").write_text("image_id,label\n" + "\n".join(rows) + "\n")
    ds = data.read_dataset(flat)
    assert ds["classes"] == ["blue", "green", "red"] and len(ds["train"].paths) == 48
    assert ds["train"].labels[ds["train"].ids.index("green3")] == "green"


def test_unlabeled_test_and_csvs_are_found(competition):
    ds = data.read_dataset(competition)
    assert ds["test"].labels is None and len(ds["test"].paths) == 9
    assert ds["sample_submission"].name == "sample_submission.csv" and ds["solution"].name == "solution.csv"


def test_split_is_stratified_reproducible_and_keeps_duplicates_together(tmp_path):
    comp = make_competition(tmp_path / "c", per_class=40)
    for name in ("red", "green", "blue"):  # exact copies under other names: must land beside their original
        for i in range(0, 40, 5):
            src = comp / "train" / name / f"{name}{i}.png"
            (comp / "train" / name / f"copy{name}{i}.png").write_bytes(src.read_bytes())
    data.split_dataset(comp, tmp_path / "s1", val=0.2, test=0.2, seed=3, block=0)
    data.split_dataset(comp, tmp_path / "s2", val=0.2, test=0.2, seed=3, block=0)
    manifest = lambda d: sorted((tmp_path / d / "manifest.csv").read_text().splitlines())
    assert manifest("s1") == manifest("s2")
    where = {}
    for part in ("train", "val", "test"):
        files = list((tmp_path / "s1" / part).glob("*/*.png"))
        assert {f.parent.name for f in files} == {"red", "green", "blue"}  # every class on every side
        where.update({f.name: part for f in files})
    assert len(where) == 144
    for name in ("red", "green", "blue"):
        for i in range(0, 40, 5):
            assert where[f"copy{name}{i}.png"] == where[f"{name}{i}.png"]
    with pytest.raises(UserError, match="exists"):
        data.split_dataset(comp, tmp_path / "s1", val=0.2, test=0.2, seed=3, block=0)


def test_numbered_frames_are_grouped_in_blocks(competition):
    train = data.read_dataset(competition)["train"]
    groups = data.duplicate_groups(train, block=5, max_share=0.5).groups
    by_file = dict(zip((p.name for p in train.paths), groups))
    assert by_file["red0.png"] == by_file["red4.png"] != by_file["red5.png"]
    assert by_file["red0.png"] != by_file["green0.png"]


def test_builtin_dataset_is_a_competition_folder(tmp_path):
    data.build_builtin_dataset(tmp_path / "digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = data.read_dataset(tmp_path / "digits")
    assert len(ds["classes"]) == 10
    assert len(ds["train"].paths) + len(ds["test"].paths) == 1797
    assert (len((tmp_path / "digits" / "sample_submission.csv").read_text().splitlines())
            == len(ds["test"].paths) + 1)


def test_eda_writes_report_and_plots(competition, tmp_path):
    eda.eda(competition, tmp_path / "eda")
    report = (tmp_path / "eda" / "eda.md").read_text()
    assert "imbalance ratio (largest / smallest class): 1.0" in report
    for png in ("class_balance.png", "examples.png", "sizes.png"):
        assert (tmp_path / "eda" / png).stat().st_size > 1000
    assert "examples.png" in report
    assert "| class | images | train | validation | share |" in report  # the split train.py makes, per class
    summary = json.loads((tmp_path / "eda" / "eda.json").read_text())  # what report.py reads
    assert summary["imbalance_ratio"] == 1.0 and summary["conclusions"][0].startswith("Balanced enough")
    assert sum(row["images"] for row in summary["split"]) == sum(summary["counts"].values())


def test_eda_without_examples_copies_no_image(competition, tmp_path):
    """--no-examples: a report to commit holds plots of counts and sizes, never the images themselves."""
    eda.eda(competition, tmp_path / "eda", examples=False)
    assert not (tmp_path / "eda" / "examples.png").exists()
    assert "examples.png" not in (tmp_path / "eda" / "eda.md").read_text()
    assert (tmp_path / "eda" / "class_balance.png").is_file()


def test_augmentation_draws_are_independent_and_reproducible():
    """Both flips at p=0.5 (--vflip) must give all four combinations, and a reseeded pipeline the same
    draws."""
    from augment import build_transform
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0] = 255  # the bright corner tells which flips were applied
    dataset = data.ImageDataset([None], [0], build_transform("light", 8, vflip=True))

    def corners(seed):
        data.reseed(dataset.transforms["train"], seed)
        out = [dataset.transforms["train"](image=image)["image"] for _ in range(64)]
        return [tuple(int(i) for i in np.unravel_index(int(o[0].argmax()), (8, 8))) for o in out]

    assert set(corners(1)) == {(0, 0), (0, 7), (7, 0), (7, 7)}
    assert corners(1) == corners(1) != corners(2)


def test_fingerprints_are_read_once_and_again_when_a_file_changes(tmp_path, monkeypatch):
    """A second start reads no image (the cache answers); a file rewritten since is read again, and a
    file that became unreadable is still skipped with a warning."""
    for name, shade in (("a", 0), ("b", 90), ("c", 200)):
        Image.fromarray(np.full((40, 40, 3), shade, np.uint8)).save(tmp_path / f"{name}.png")
    paths = sorted(tmp_path.glob("*.png"))
    first = data.scan_images(paths, tmp_path)
    read = []
    fingerprint = data.image_fingerprint
    monkeypatch.setattr(data, "image_fingerprint", lambda p: read.append(p.name) or fingerprint(p))
    second = data.scan_images(paths, tmp_path)
    assert read == [] and second[0] == first[0] and np.array_equal(second[2], first[2])
    noise = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not an image any more")
    with pytest.warns(UserWarning, match="c.png"):
        kept, sizes, hashes = data.scan_images(paths, tmp_path)
    assert read == ["b.png", "c.png"] and kept == [0, 1] and sizes[1].tolist() == [48, 40]
    assert hashes[1] != first[2][1]


def test_epoch_order_makes_augmentation_independent_of_workers_and_epochs_before():
    """Persistent loader workers keep their state from epoch to epoch; the augmentations of an epoch must
    still depend on its seed alone (exact --resume): the same with 0 or 2 workers, the same when an
    epoch is replayed after another one, and two draws of one repeated image differ."""
    from augment import build_transform
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for _ in range(6)]
    dataset = data.ImageDataset([None] * 6, list(range(6)), build_transform("heavy", 8))
    dataset.cache = images
    order = data.EpochOrder()

    def epoch(loader, seed):
        order.set_epoch([0, 1, 2, 3, 4, 5, 0, 0], seed)
        return torch.cat([x for x, _ in loader])

    cpu = torch.device("cpu")
    inline, workers = data.make_loader(dataset, 4, 0, cpu, order), data.make_loader(dataset, 4, 2, cpu, order)
    first = epoch(inline, 7)
    assert torch.equal(first, epoch(workers, 7))
    assert not torch.equal(first, epoch(workers, 8))
    assert torch.equal(first, epoch(workers, 7))  # replayed after another epoch, by the same live workers
    assert not torch.equal(first[0], first[6]) and not torch.equal(first[6], first[7])


def test_flips_is_exactly_the_two_flips_after_the_resize():
    from augment import augmentations, tta_views
    assert [type(op).__name__ for op in augmentations("flips", 32)] == ["Resize", "HorizontalFlip",
                                                                        "VerticalFlip"]
    assert [name for name, _ in tta_views("flips")] == ["plain", "hflip", "vflip", "hvflip"]


def test_light_flips_horizontally_only_unless_asked():
    from augment import augmentations
    names = lambda ops: {type(op).__name__ for op in ops}
    assert "VerticalFlip" not in names(augmentations("light", 32)) | names(augmentations("heavy", 32))
    assert "HorizontalFlip" in names(augmentations("light", 32)) and "VerticalFlip" in names(
        augmentations("light", 32, vflip=True))


def test_uint8_batches_normalised_on_the_device_match_albumentations_normalize():
    """The loader hands over uint8 tensors; augment.model_input must give the model what albumentations'
    Normalize (and preprocessing.json of an export) describe: (pixel / 255 - mean) / std per channel."""
    import albumentations as A

    from augment import build_transform, model_input
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    batch = build_transform("none", 16)(image=image)["image"]
    assert batch.dtype == torch.uint8 and batch.shape == (3, 16, 16)
    reference = A.Compose([A.Resize(16, 16, area_for_downscale="image"), A.Normalize(mean=mean, std=std)])
    expected = torch.from_numpy(reference(image=image)["image"]).permute(2, 0, 1)
    assert torch.allclose(model_input(batch[None], torch.device("cpu"), mean, std)[0], expected, atol=1e-5)


def test_cached_images_give_the_pipelines_what_the_files_give():
    """fill_cache keeps images already at the input size for pipelines that only resize first (their
    resize then does nothing), and larger ones for random crops: either way an item is what the
    uncached dataset gives for the same seed, up to rounding."""
    from augment import build_transform, cache_form
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]
    assert cache_form({"light"}, 32)(images[0]).shape == (32, 32, 3)
    assert cache_form({"heavy", "none"}, 32)(images[0]).shape == (64, 85, 3)
    for aug in ("none", "light"):
        plain = data.ImageDataset([None] * 3, [0] * 3, build_transform(aug, 32))
        plain.cache = images  # as decoded from the files, full size
        cached = data.ImageDataset([None] * 3, [0] * 3, build_transform(aug, 32))
        cached.cache = [cache_form({aug}, 32)(image) for image in images]
        for i in range(3):
            a, b = plain[(7, i)][0].int(), cached[(7, i)][0].int()
            assert (a - b).abs().max() <= 1
