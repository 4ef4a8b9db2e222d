"""Mutilated competition folders: every case ends in a named error, or a warning and a correct result;
never a traceback, never a silently wrong file. (reports/reliability.md lists the probes.)"""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import data
import predict
import train
from conftest import ROOT, make_competition
from utils import UserError


@pytest.fixture
def scored(trained_run, tmp_path, monkeypatch):
    """A copy of the trained run's data to mutilate, and a predict() that writes into a fresh folder."""
    work, source, run_dir = trained_run
    comp = tmp_path / "comp"
    shutil.copytree(source, comp)
    monkeypatch.chdir(work)

    def run_predict(*extra):
        out = tmp_path / "out"
        predict.main(["--run", str(run_dir), "--data", str(comp), "--workers", "0", "--out", str(out),
                      *extra])
        with open(out / "submission.csv", newline="") as f:
            return list(csv.reader(f))
    return comp, run_predict


def sample_ids(comp):
    return [line.split(",")[0] for line in (comp / "sample_submission.csv").read_text().splitlines()[1:]]


def test_ids_with_commas_survive_the_submission(scored):
    comp, run_predict = scored
    first = sample_ids(comp)[0]
    (comp / "test" / f"{first}.jpg").rename(comp / "test" / "a,b.jpg")
    text = (comp / "sample_submission.csv").read_text().replace(f"\n{first},", '\n"a,b",', 1)
    (comp / "sample_submission.csv").write_text(text)
    (comp / "solution.csv").write_text(
        (comp / "solution.csv").read_text().replace(f"\n{first},", '\n"a,b",', 1))
    rows = run_predict()
    assert ["a,b"] == [r[0] for r in rows if r[0] == "a,b"] and all(len(r) == 2 for r in rows)


def test_extra_columns_of_the_sample_are_kept_and_the_label_filled(scored):
    comp, run_predict = scored
    ids = sample_ids(comp)
    (comp / "sample_submission.csv").write_text("id,extra,label\n" + "".join(f"{i},x{i},red\n" for i in ids))
    rows = run_predict()
    assert rows[0] == ["id", "extra", "label"] and [r[1] for r in rows[1:]] == [f"x{i}" for i in ids]
    assert {r[2] for r in rows[1:]} <= {"red", "green", "blue"}


@pytest.mark.parametrize("content, message", [("", "no header"), ("id,label\n", "a header but no rows"),
                                              ("id,label\n1000,red\n1000,red\n", "more than once")])
def test_a_broken_sample_submission_is_a_named_error(scored, content, message):
    comp, run_predict = scored
    (comp / "sample_submission.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        run_predict()


def test_two_test_files_with_one_id_are_an_error(scored):
    comp, run_predict = scored
    first = sample_ids(comp)[0]
    Image.open(comp / "test" / f"{first}.jpg").save(comp / "test" / f"{first}.png")
    with pytest.raises(UserError, match=f"two images with id {first}"):
        run_predict()


def test_solution_with_bom_other_headers_and_a_blank_usage(scored, capsys):
    comp, run_predict = scored
    rows = list(csv.reader((comp / "solution.csv").read_text().splitlines()))
    rows[0] = ["Id", "Expected", "Usage"]
    rows[1][2] = ""
    (comp / "solution.csv").write_text("\ufeff" + "\n".join(",".join(r) for r in rows) + "\n",
                                       encoding="utf-8")
    run_predict()
    out = capsys.readouterr().out
    assert "| all | 9 |" in out and "| Public |" in out and "have no Usage" in out


def test_solution_giving_one_id_two_labels_is_an_error(scored, tmp_path):
    comp, run_predict = scored
    first = sample_ids(comp)[0]
    with open(comp / "solution.csv", "a") as f:
        f.write(f"{first},green,Public\n{first},blue,Public\n")
    with pytest.raises(UserError, match=f"gives id {first} two labels"):
        run_predict()
    assert not (tmp_path / "out" / "submission.csv").exists()  # stopped before the submission


def test_an_unreadable_test_image_is_predicted_as_the_majority_class(scored, capsys):
    comp, run_predict = scored
    first = sample_ids(comp)[0]
    (comp / "test" / f"{first}.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        rows = run_predict("--solution", str(comp / "solution.csv"))
    assert len(rows) == 10 and first in [r[0] for r in rows]
    assert "predicted as the most frequent training class" in capsys.readouterr().out


def test_a_run_is_never_used_on_data_with_other_classes(scored):
    comp, run_predict = scored
    (comp / "train" / "blue").rename(comp / "train" / "navy")
    with pytest.raises(UserError, match="trained on other classes"):
        run_predict()


def test_train_csv_typos_empty_labels_and_conflicts(tmp_path):
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(flat / "train" / f"im{i}.png")
    cases = {"im0,car\nim1,car\nim2,truck\nim3,Car\n": "differ only in case",
             "im0,car\nim1,truck\nim0,truck\n": "gives id im0 two labels"}
    for rows, message in cases.items():
        (flat / "train.csv").write_text("id,label\n" + rows)
        with pytest.raises(UserError, match=message):
            data.read_dataset(flat)
    (flat / "train.csv").write_text("id,label\nim0,car\nim1,truck\nim2,\nim3,car\nim3,car\n")
    with pytest.warns(UserWarning) as record:
        ds = data.read_dataset(flat)
    assert ds["classes"] == ["car", "truck"] and len(ds["train"].paths) == 3
    assert (any("empty label" in str(w.message) for w in record)
            and any("repeated" in str(w.message) for w in record))


def test_folder_layout_mistakes(tmp_path):
    comp = make_competition(tmp_path / "c")
    (comp / "train" / "red" / "more").mkdir()
    with pytest.warns(UserWarning, match="has subfolders"):
        data.read_dataset(comp)
    (comp / "train" / "red" / "more").rmdir()
    (comp / "test" / "red").mkdir()
    Image.new("RGB", (32, 32)).save(comp / "test" / "red" / "x.png")
    with pytest.raises(UserError, match="both class folders and 9 images"):
        data.read_dataset(comp)


def test_a_class_with_one_image_trains_and_is_reported(tmp_path, monkeypatch, capsys):
    comp = make_competition(tmp_path / "c")
    for extra in list((comp / "train" / "blue").iterdir())[1:]:
        extra.unlink()
    monkeypatch.chdir(tmp_path)
    run_dir = train.main(["--data", str(comp), "--epochs", "1", "--workers", "0", "--name", "one"])
    out = capsys.readouterr().out
    assert "too small to hold any image out" in out and "blue" in out
    counts = {r["class"]: r for r in csv.DictReader(open(tmp_path / run_dir / "split_counts.csv"))}
    assert counts["blue"]["train"] == "1" and counts["blue"]["held_out"] == "0"


def test_float_tiff_in_zero_one_is_not_black(tmp_path):
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(a, mode="F").save(tmp_path / "float.tif")
    rgb = data.load_rgb(tmp_path / "float.tif")
    assert rgb.max() == 255 and rgb.min() == 0 and abs(rgb.mean() - 127.5) < 2


def test_a_class_whose_images_are_all_unreadable_is_an_error_not_a_class_fewer(competition):
    for path in (competition / "train" / "blue").iterdir():
        path.write_bytes(b"not an image")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no readable image of class blue"):
        data.read_dataset(competition)


def test_class_folders_beside_a_train_csv_say_which_one_is_read(competition):
    (competition / "train.csv").write_text("id,label\nred0,blue\n")
    with pytest.warns(UserWarning, match="train.csv is not read"):
        assert data.read_dataset(competition)["classes"] == ["blue", "green", "red"]


def test_settings_that_cannot_be_honoured_are_errors(trained_run, tmp_path, monkeypatch):
    import utils
    monkeypatch.chdir(tmp_path)  # any run folder lands here
    with pytest.raises(UserError, match="CUDA GPU"):
        utils.pick_device("cuda:7" if not __import__("torch").cuda.device_count() else "cuda:4096")
    _, data_dir, run_dir = trained_run
    with pytest.raises(UserError, match=r"--run .*best.pt is a file: pass the run folder that holds it"):
        predict.main(["--run", str(run_dir / "best.pt")])
    with pytest.raises(UserError, match=r"--init .*best.pt is a file"):
        train.main(["--data", str(data_dir), "--init", str(run_dir / "best.pt")])
    with pytest.raises(UserError, match="--resume continues the run's own 2 epochs"):
        train.main(["--resume", str(run_dir), "--epochs", "12"])
    with pytest.raises(UserError, match="--synthetic .*missing: folder not found"):
        train.main(["--data", str(data_dir), "--synthetic", str(tmp_path / "missing"), "--epochs", "1",
                    "--workers", "0"])


def test_a_file_name_that_is_not_utf8_is_skipped_and_a_class_folder_so_named_refused(competition):
    bad = competition / "train" / "red" / os.fsdecode(b"bad\xff.png")
    shutil.copy(next((competition / "train" / "red").iterdir()), bad)
    with pytest.warns(UserWarning, match="not valid UTF-8"):
        ds = data.read_dataset(competition)
    assert bad not in ds["train"].paths and len(ds["train"].paths) == 3 * 16
    shutil.copytree(competition / "train" / "red", competition / "train" / os.fsdecode(b"r\xffd"))
    with pytest.warns(UserWarning), pytest.raises(UserError, match="not valid UTF-8"):
        data.read_dataset(competition)


def test_ctrl_c_names_the_folder_to_resume(competition, tmp_path):
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(competition), "--epochs", "2000",
               "--img-size", "16", "--workers", "0", "--name", "stopped"]
    # SIGINT back to its default in the child: a shell's background job (CI under nohup, `cmd &`) starts with
    # it ignored, and Python then never turns it into KeyboardInterrupt
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (tmp_path / "runs" / "stopped" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr
    assert "go on with python train.py --resume runs/stopped" in stderr
