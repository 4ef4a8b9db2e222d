"""analysis.write_analysis on handcrafted predictions: which images are errors, and of which type, is
known."""
import csv
import re

import numpy as np
import pytest
from PIL import Image

from analysis import lookalike_pairs, write_analysis

CLASSES = ["a", "b", "c"]
# image index: (true, predicted, probabilities in CLASSES order, expected group)
ERRORS = {
    0: ("a", "b", [0.30, 0.60, 0.10], "look-alike"),
    1: ("a", "b", [0.25, 0.65, 0.10], "look-alike"),
    2: ("a", "b", [0.25, 0.70, 0.05], "look-alike"),
    10: ("b", "a", [0.70, 0.20, 0.10], "look-alike"),
    12: ("b", "a", [0.92, 0.05, 0.03], "confident"),  # confident wins over look-alike
    11: ("b", "c", [0.05, 0.40, 0.55], "ambiguous"),  # p >= 0.5 but the margin is 0.15
    20: ("c", "a", [0.95, 0.02, 0.03], "confident"),
    21: ("c", "b", [0.15, 0.45, 0.40], "ambiguous"),
    22: ("c", "a", [0.60, 0.05, 0.35], "other"),  # a and c do not look alike
}


def labeled_split(tmp_path, n_per_class=10):
    """Tiny PNGs, all predicted right with p=0.8; a and b have close embeddings, c is far from both."""
    rng = np.random.default_rng(0)
    labels = [c for c in CLASSES for _ in range(n_per_class)]
    paths = []
    for i in range(len(labels)):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    centres = {"a": [1.0, 0.3, 0.0], "b": [1.0, -0.3, 0.0], "c": [0.0, 0.0, 1.0]}
    embeddings = np.array([centres[label] for label in labels]) + rng.normal(0, 0.05, (len(labels), 3))
    probs = np.array([[0.8 if c == label else 0.1 for c in CLASSES] for label in labels])
    ids = [f"id{i}" for i in range(len(labels))]
    return ids, paths, labels, probs, embeddings


def read_rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("analysis")
    ids, paths, labels, probs, embeddings = labeled_split(tmp_path)
    for i, (_, _, p, _) in ERRORS.items():
        probs[i] = p
    embeddings[20] = embeddings[5] * 2  # same direction: image 5 is the nearest "a" to image 20
    summary = write_analysis(tmp_path / "out", "val", CLASSES, ids, paths, labels, probs, embeddings)
    return tmp_path / "out", summary, probs


def test_errors_csv_lists_exactly_the_errors_by_loss(analysed):
    out, _, probs = analysed
    rows = read_rows(out / "val_errors.csv")
    assert {r["id"] for r in rows} == {f"id{i}" for i in ERRORS}
    for r in rows:
        i = int(r["id"][2:])
        true, predicted, p, _ = ERRORS[i]
        assert (r["true"], r["predicted"]) == (true, predicted)
        assert float(r["loss"]) == pytest.approx(-np.log(p[CLASSES.index(true)]))
        assert float(r["confidence"]) == pytest.approx(max(p))
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)


def test_each_error_gets_the_group_of_the_first_matching_rule(analysed):
    rows = read_rows(analysed[0] / "val_errors.csv")
    assert {r["id"]: r["group"] for r in rows} == {f"id{i}": e[3] for i, e in ERRORS.items()}


def test_confident_errors_name_their_nearest_image_of_the_predicted_class(analysed):
    rows = {r["id"]: r for r in read_rows(analysed[0] / "val_errors.csv")}
    assert rows["id20"]["nearest_predicted_class_id"] == "id5"
    assert float(rows["id20"]["nearest_similarity"]) == pytest.approx(1.0)
    assert int(rows["id12"]["nearest_predicted_class_id"][2:]) < 10  # an image labeled "a"
    assert rows["id0"]["nearest_predicted_class_id"] == ""


def test_report_ranks_pairs_and_names_the_dominant_group(analysed):
    out, summary, _ = analysed
    report = (out / "val_analysis.md").read_text()
    confused = report.split("## Most confused")[1]
    first_row = [line for line in confused.splitlines() if line.startswith("| ") and "---" not in line][1]
    assert first_row.startswith("| a | b | 3 | 0.300 |")
    assert re.search(r"\| a \| b \| 0\.\d+ \|", report.split("## Look-alike")[1])
    assert "**look-alike**" in report and "--hard-fraction 0.2" in report
    assert re.search(r"--heavy-classes (a,b|b,a) --oversample-classes (a,b|b,a)`", report)
    assert "look-alike 4" in summary and "confident 2" in summary


def test_all_promised_files_exist_and_are_linked(analysed):
    out = analysed[0]
    names = {"val_analysis.md", "val_errors.csv", "val_confusion_counts.png", "val_confusion_normalised.png",
             "val_worst_errors.png", "val_pair_a_vs_b.png", "val_pair_a_vs_c.png", "val_pair_b_vs_c.png"}
    assert names <= {p.name for p in out.iterdir()}
    linked = re.findall(r"\]\(([^)]+\.png)\)", (out / "val_analysis.md").read_text())
    assert set(linked) == {n for n in names if n.endswith(".png")}


def test_no_errors_writes_a_report_without_galleries(tmp_path):
    ids, paths, labels, _, embeddings = labeled_split(tmp_path)
    probs = np.array([[0.9 if c == label else 0.05 for c in CLASSES] for label in labels])
    summary = write_analysis(tmp_path / "out", "test", CLASSES, ids, paths, labels, probs, embeddings)
    assert "no errors" in summary
    assert "No errors" in (tmp_path / "out" / "test_analysis.md").read_text()
    assert read_rows(tmp_path / "out" / "test_errors.csv") == []
    assert (not list((tmp_path / "out").glob("*pair*"))
            and not (tmp_path / "out" / "test_worst_errors.png").exists())


def test_tiny_input_with_an_empty_class(tmp_path):
    ids, paths, labels, probs, embeddings = labeled_split(tmp_path, n_per_class=1)
    probs = np.hstack([probs, np.zeros((3, 1))])
    probs[1] = [0.6, 0.3, 0.1, 0.0]  # one error, "b" taken for "a"
    summary = write_analysis(tmp_path, "val", CLASSES + ["d"], ids, paths, labels, probs, embeddings)
    assert "1 errors in 3 images" in summary
    assert (tmp_path / "val_pair_a_vs_b.png").exists()


def test_two_classes_have_no_lookalike_pair():
    units = np.array([[1.0, 0.0], [0.99, 0.14]])
    assert lookalike_pairs(["x", "y"], np.array([0, 1]), units) == []
