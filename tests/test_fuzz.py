"""Property-based fuzzing (hypothesis) of what a careless user or an attacker controls: class names in
train.csv and option values. Whatever is drawn, the result is either valid or one error line, never a
traceback, and no file is written outside the folder given. Bounded: seconds, not minutes."""
import csv
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
import predict
import train
from conftest import colour_image
from utils import UserError

HOSTILE = ["..", ".", "../x", "../../../../x", "/tmp/fuzz-x", "a/b", "a\\b", "x\x00y", "tab\tname", " ",
           "Red", "red ", "e\u0301", "\u202ename", "con", "a" * 300]
NAMES = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=0, max_size=16))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight tiny images of two colours, copied into each drawn competition."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        colour_image(i % 2, rng, size=16).save(folder / f"im{i}.png")
    return folder


@FUZZ
@given(label=NAMES)
def test_a_drawn_class_name_is_a_split_or_one_error_line_and_never_a_path_out(images, tmp_path_factory,
                                                                              label):
    tree = tmp_path_factory.mktemp("tree")
    # deep enough that ../../../../x stays in the tree when it escapes
    root = tree / "a" / "b" / "c" / "d" / "e"
    shutil.copytree(images, root / "comp" / "train")
    with open(root / "comp" / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows([f"im{i}", "red" if i % 2 == 0 else label] for i in range(8))
    try:
        data.split_dataset(root / "comp", root / "out", 0.25, 0.25, 0, 0)
    except UserError as e:
        assert "\n" not in str(e)
    except ValueError as e:
        # a label the filesystem refuses (too long, a NUL) is not a UserError: not allowed
        pytest.fail(f"{label!r}: {e}")
    written = [p for p in tree.rglob("*") if p.is_file()]
    assert all(root / "comp" in p.parents or root / "out" in p.parents for p in written), written


OPTIONS = ["--img-size", "--epochs", "--batch-size", "--lr", "--workers", "--accum", "--label-smoothing",
           "--drop", "--ema", "--width", "--warmup-epochs", "--val-fraction", "--train-fraction",
           "--patience", "--focal-gamma"]
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=8))


@FUZZ
@given(option=st.sampled_from(OPTIONS), value=VALUES)
def test_a_drawn_option_value_is_accepted_in_range_or_is_one_argparse_error(option, value, capsys):
    try:
        args = train.parse_args([option, str(value)])
    except SystemExit as stop:
        assert stop.code == 2 and f"error: argument {option}" in capsys.readouterr().err
        return
    chosen = getattr(args, option[2:].replace("-", "_"))
    assert np.isfinite(chosen) and chosen >= 0


@FUZZ
@given(option=st.sampled_from(["--tta", "--top-k", "--batch-size", "--workers", "--logit-adjust"]),
       value=VALUES)
def test_a_drawn_predict_option_is_accepted_finite_or_is_one_argparse_error(option, value, capsys):
    try:
        args = predict.parse_args([option, str(value)])
    except SystemExit as stop:
        assert stop.code == 2 and f"error: argument {option}" in capsys.readouterr().err
        return
    assert np.isfinite(getattr(args, option[2:].replace("-", "_")))
