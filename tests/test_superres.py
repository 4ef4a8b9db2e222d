import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import superres
from conftest import CLASSES
from data import read_dataset
from utils import UserError


def test_espcn_doubles_height_and_width_and_starts_as_bicubic():
    x = torch.rand(2, 3, 10, 14)
    model = superres.ESPCN(scale=2)
    out = model(x)
    assert out.shape == (2, 3, 20, 28)
    assert torch.allclose(out, F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
    assert superres.ESPCN(scale=3)(x).shape == (2, 3, 30, 42)


@pytest.fixture(scope="module")
def espcn_run(tmp_path_factory):
    """A short training on the tiny competition, shared by the tests below."""
    from conftest import make_competition
    work = tmp_path_factory.mktemp("sr")
    data = make_competition(work / "comp")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        run_dir = superres.main(["--data", str(data), "--epochs", "3", "--crop", "16", "--batch-size", "8",
                                 "--block", "4", "--holdout", "0.2", "--name", "tiny"])
    return work, data, work / run_dir


def test_training_writes_model_and_held_out_psnr(espcn_run):
    work, data, run_dir = espcn_run
    assert run_dir.name == "sr-tiny" and (run_dir / "espcn.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["held_out_images"] < 24 and metrics["held_out_images"] + metrics["train_images"] == 48
    assert metrics["scale"] == 2
    assert set(metrics["psnr_db"]) == {"espcn", "bicubic", "bilinear"}
    assert all(10 < db < 60 for db in metrics["psnr_db"].values())
    assert "| bicubic |" in (run_dir / "psnr.md").read_text()


def test_upscale_writes_a_folder_train_py_can_read(espcn_run, monkeypatch):
    work, data, run_dir = espcn_run
    monkeypatch.chdir(work)
    out = superres.main(["upscale", "--model", str(run_dir / "espcn.pt"), "--data", str(data),
                         "--out", "big"])
    assert sorted(p.name for p in (work / out / "train").iterdir()) == sorted(CLASSES)
    for name in CLASSES:
        assert (len(list((work / out / "train" / name).iterdir()))
                == len(list((data / "train" / name).iterdir())))
    assert len(list((work / out / "test").iterdir())) == 9
    with Image.open(next((work / out / "test").iterdir())) as im:
        assert im.size == (64, 64)
    assert (work / out / "solution.csv").read_text() == (data / "solution.csv").read_text()
    ds = read_dataset(work / out)
    assert (ds["classes"] == sorted(CLASSES) and len(ds["train"].paths) == 48
            and ds["sample_submission"] is not None)
    with pytest.raises(UserError, match="exists"):
        superres.main(["upscale", "--model", str(run_dir / "espcn.pt"), "--data", str(data), "--out", "big"])
    with pytest.raises(UserError, match="model not found"):
        superres.main(["upscale", "--model", "missing.pt", "--data", str(data)])
