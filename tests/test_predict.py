import csv
import json
import shutil

import numpy as np
import pytest
import torch

import predict
from augment import build_transform, model_input, tta_views, view_probs
from models import build_model
from utils import UserError


def test_tta_views_are_batched_and_view_zero_is_the_plain_prediction():
    model, _, _ = build_model("smallcnn", 4)
    model.eval()
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    views = tta_views("heavy")
    assert [name for name, _ in views][:3] == ["plain", "hflip", "zoom"] and len(views) == 8
    assert [name for name, _ in tta_views("light")] == ["plain", "hflip"] and len(tta_views("none")) == 1
    assert (all(fn(image).ndim == 3 for _, fn in views)
            and views[1][1](image)[0, 0].tolist() == image[0, -1].tolist())
    transform = build_transform("none", 32)
    stacked = torch.stack([torch.stack([transform(image=np.ascontiguousarray(fn(image)))["image"]
                                        for _, fn in views])] * 3)
    probs, embeddings = view_probs(model, stacked, (0.5,) * 3, (0.5,) * 3)
    assert probs.shape == (8, 3, 4) and embeddings.shape == (3, model.head.in_features)
    assert torch.allclose(probs.sum(-1), torch.ones(8, 3))
    assert torch.allclose(probs[0], model(model_input(stacked[:, 0], torch.device("cpu"), (0.5,) * 3,
                                                      (0.5,) * 3)).softmax(1), atol=1e-5)
    assert not torch.allclose(probs[0], probs[1])  # a flipped view is a different input
    assert views[2][1](image).shape == (36, 27, 3)  # the zoom: a 90% window
    assert {"vflip", "hvflip"} <= {name for name, _ in tta_views("light", vflip=True)}


def test_views_are_kept_only_where_they_help_on_validation():
    targets = torch.tensor([0, 1, 0, 1, 0, 1])
    unsure = torch.tensor([[0.45, 0.55], [0.4, 0.6], [0.6, 0.4], [0.55, 0.45], [0.7, 0.3],
                           [0.3, 0.7]])  # 4 of 6
    sure = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.3, 0.7], [0.8, 0.2], [0.2, 0.8]])  # 6 of 6
    wrong = 1 - sure  # every answer flipped: averaged in, it costs accuracy
    kept, plain_acc, tta_acc = predict.choose_views(torch.stack([unsure, wrong, sure]), targets)
    assert kept == [0, 2] and (plain_acc, tta_acc) == (pytest.approx(4 / 6), 1.0)
    # one more image right is within the noise: the plain view alone
    nearly = unsure.clone()
    nearly[0] = torch.tensor([0.55, 0.45])  # 5 of 6 right
    assert predict.choose_views(torch.stack([nearly, sure]), targets)[0] == [0]


def test_submission_follows_sample_submission(trained_run, monkeypatch):
    work, data, run_dir = trained_run
    monkeypatch.chdir(work)
    predict.main(["--run", str(run_dir), "--tta", "4", "--workers", "0"])
    with open(run_dir / "submission.csv") as f:
        rows = list(csv.reader(f))
    sample = (data / "sample_submission.csv").read_text().splitlines()
    assert rows[0] == ["id", "category"]
    assert [r[0] for r in rows[1:]] == [line.split(",")[0] for line in sample[1:]]
    assert {r[1] for r in rows[1:]} <= {"red", "green", "blue"}
    report = (run_dir / "test_report.md").read_text()
    assert "| Public |" in report and "| Private |" in report and "accuracy with TTA" in report
    assert (run_dir / "test_confusion_matrix.png").is_file()
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["images"] == 9 and set(metrics["recall_tta"]) == {"red", "green", "blue"}
    assert (metrics["tta_view_names"][0] == "plain"
            and metrics["tta_views"] == len(metrics["tta_view_names"]) <= 4)
    assert 0 <= metrics["acc_tta_public"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    with open(run_dir / "test_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 9 and abs(sum(float(preds[0][c]) for c in ("red", "green", "blue")) - 1) < 1e-3


def test_out_keeps_the_run_folder_untouched(trained_run, monkeypatch):
    work, _, run_dir = trained_run
    monkeypatch.chdir(work)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    predict.main(["--run", str(run_dir), "--workers", "0", "--out", "elsewhere"])
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    assert ({"submission.csv", "test_report.md", "test_metrics.json"}
            <= {p.name for p in (work / "elsewhere").iterdir()})


def test_predictions_are_at_the_run_test_size_or_img_size(trained_run, monkeypatch, capsys):
    """The run's test size (its input size after --aug light), --img-size instead where given, and a
    checkpoint from before the test size existed at its input size."""
    work, data, run_dir = trained_run
    sizes = []
    transform = predict.build_transform
    monkeypatch.setattr(predict, "build_transform", lambda aug, size, *a: sizes.append(size) or
                        transform(aug, size, *a))
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    assert ckpt["inference"]["img_size"] == ckpt["inference"]["test_size"] == 32
    del ckpt["inference"]["test_size"]
    older = work / "older"
    shutil.copytree(run_dir, older)
    torch.save(ckpt, older / "best.pt")
    for folder, extra, expected in ((run_dir, [], 32), (run_dir, ["--img-size", "48"], 48), (older, [], 32)):
        sizes.clear()
        predict.main(["--run", str(folder), "--workers", "0", "--out", str(work / "sized"), *extra])
        assert set(sizes) == {expected} and f"at {expected} px" in capsys.readouterr().out


def test_latest_run_is_the_default(trained_run, monkeypatch, capsys):
    work, _, run_dir = trained_run
    monkeypatch.chdir(work)
    predict.main(["--split", "val", "--workers", "0"])
    assert "runs/tiny" in capsys.readouterr().out
    assert (run_dir / "val_report.md").is_file()


def test_wrong_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        predict.main(["--run", str(tmp_path)])
    torch.save({"something": 1}, tmp_path / "best.pt")
    with pytest.raises(UserError, match="not a checkpoint written by train.py"):
        predict.main(["--run", str(tmp_path)])
    with pytest.raises(UserError, match="no run with best.pt"):
        predict.main([])  # no runs/ folder in the test's working directory


def test_analysis_flag_writes_the_error_analysis(trained_run, monkeypatch):
    work, _, run_dir = trained_run
    monkeypatch.chdir(work)
    predict.main(["--run", str(run_dir), "--workers", "0", "--analysis"])
    report = (run_dir / "test_analysis.md").read_text()
    assert "confus" in report.lower()
    for name in ("test_errors.csv", "test_confusion_counts.png", "test_confusion_normalised.png"):
        assert (run_dir / name).is_file()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_torch(trained_run, tmp_path, fmt):
    _, _, run_dir = trained_run
    predict.main(["--run", str(run_dir), "--export", fmt, "--out", str(tmp_path)])
    spec = json.loads((tmp_path / "preprocessing.json").read_text())
    assert spec["classes"] == ["blue", "green", "red"] and spec["input"].startswith("float32 N x 3 x 32 x 32")
    from models import load_run
    model, _ = load_run(run_dir)
    batch = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model.float().to(memory_format=torch.contiguous_format)(batch)
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(tmp_path / spec["model"]))
        got = torch.from_numpy(session.run(None, {"image": batch.numpy()})[0])
    else:
        got = torch.jit.load(str(tmp_path / spec["model"]))(batch)
    assert torch.allclose(got, expected, atol=1e-4)


def test_images_anywhere_get_a_top_k_csv(trained_run, tmp_path):
    work, data, run_dir = trained_run
    loose = tmp_path / "photos"
    loose.mkdir()
    for path in list((data / "test").iterdir())[:4]:
        (loose / path.name).write_bytes(path.read_bytes())
    (loose / "notes.txt").write_text("not an image")
    predict.main(["--run", str(run_dir), "--images", str(loose), "--top-k", "2", "--tta", "2",
                  "--workers", "0", "--out", str(tmp_path / "out")])
    with open(tmp_path / "out" / "images_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and list(rows[0]) == ["file", "class_1", "prob_1", "class_2", "prob_2"]
    assert all(float(r["prob_1"]) >= float(r["prob_2"]) for r in rows)


def test_a_checkpoint_of_the_old_layout_predicts_the_same(trained_run, tmp_path):
    """Checkpoints written before the inference section (train.py's options under "args", mean and std
    beside them) still load, and give the same predictions as the section does."""
    work, data, run_dir = trained_run
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    section = ckpt["inference"]
    assert {"arch", "img_size", "upscale", "mean", "std", "tta_views", "data"} <= set(section)
    old = {key: value for key, value in ckpt.items() if key != "inference"}
    old.update(mean=section["mean"], std=section["std"])
    old_dir = tmp_path / "old"
    # split.csv too: the test-time views are chosen on its validation images
    shutil.copytree(run_dir, old_dir)
    torch.save(old, old_dir / "best.pt")
    for folder in (run_dir, old_dir):
        predict.main(["--run", str(folder), "--data", str(data), "--tta", "4", "--workers", "0",
                      "--out", str(tmp_path / f"out-{folder.name}")])
    new_rows, old_rows = ((tmp_path / f"out-{name}" / "test_predictions.csv").read_text()
                          for name in (run_dir.name, "old"))
    assert new_rows == old_rows
    from models import inference_settings
    assert inference_settings(old) == section
