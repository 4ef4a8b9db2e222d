"""report.py writes the task's account from records alone: sections in the task's order, numbers from the
records, "pending" where a record is missing, and comparisons that say when they are within seed noise."""
import json
import re

import report


def summary(acc, acc_tta, kept_val_acc=0.9):
    return {"acc": acc, "acc_tta": acc_tta, "f1_tta": acc_tta, "kept_val_acc": kept_val_acc, "kept_epoch": 8,
            "seconds": 100.0, "recall_tta": {"a": 1.0, "b": 1.0}, "val_acc": [0.8, 0.9]}


def test_task_report_from_records_alone(tmp_path):
    record = {f"pretrained-flips-s{s}": {"summary": summary(0.90 + 0.001 * s, 0.91 + 0.001 * s)}
              for s in range(3)}
    record |= {f"pretrained-heavy-s{s}": {"summary": summary(0.95 + 0.001 * s, 0.95 + 0.001 * s)}
               for s in range(3)}
    record |= {"scratch-heavy-s0": {"summary": summary(0.80, 0.81)}}
    (tmp_path / f"{report.MAIN_GRID}.json").write_text(json.dumps(record))
    out, headlines = report.write_task_report(tmp_path)
    text = out.read_text()

    titles = re.findall(r"^## (\d)\. ", text, flags=re.M)
    assert titles == ["1", "2", "3", "4", "5", "6", "7"]
    for part in text.split("\n## ")[1:]:
        assert "**Question.**" in part and "**Answer.**" in part and "```bash" in part
    assert "| pretrained-flips | 3/3 | 0.9010 ± 0.0010 | 0.9110 ± 0.0010 | 0.0100 ± 0.0000 |" in text
    assert "| scratch-flips | 0/3 | pending |" in text
    assert "| heavy over flips, with transfer | +5.00 (beyond noise, 2 SE 0.16) | +4.00 (beyond noise" in text
    assert "| heavy over flips, from scratch | pending | pending |" in text  # no flips run yet
    findings = report.grid_findings(report.MAIN_GRID)  # in words, from grids.json, not those that point here
    assert findings and all(f"\n- {finding}\n" in text and "task.md" not in finding for finding in findings)
    # no eda.json
    assert "python eda.py" in text.split("## 2.")[0] and "**Answer.** pending" in text.split("## 2.")[0]
    assert ([anchor for _, anchor, _ in headlines][2]
            == "3-training-transfer-flips-or-heavy-tta-upscaling")
    assert headlines[2][2].startswith("heavy against flips: scratch pending, pretrained +5.00 points "
                                      "(3 and 3 seeds)")
    assert "| `--aug flips` | Resize, HorizontalFlip, VerticalFlip | plain, hflip, vflip, hvflip |" in text


def test_one_seed_is_never_called_a_difference():
    assert "1 and 2 seeds: no spread yet" in report.compare([0.9], [0.8, 0.81], "a", "b")
    assert "within seed noise" in report.compare([0.90, 0.95, 0.85], [0.91, 0.86, 0.96], "a", "b")


def test_grids_older_than_their_records_are_read_from_their_report_table(tmp_path):
    """errorloop and balancing have no reports/GRID.json: their report's first table gives mean, std and
    seeds, and the comparison is made from those."""
    table = ["| row | seeds done | test acc | macro-F1, TTA |", "|---|---|---|---|",
             "| control | 3/3 | 0.80 ± 0.01 | 0.7900 ± 0.0100 |",
             "| hard-examples | 3/3 | 0.85 ± 0.01 | 0.8400 ± 0.0100 |",
             "| heavy-confused | 1/3 | 0.79 | 0.7800 |", "",
             "| row | a | b |", "|---|---|---|", "| control | 1 | 2 |"]  # a second table: not read
    (tmp_path / "errorloop.md").write_text("# Grid\n\n" + "\n".join(table) + "\n")
    rows = report.report_table(tmp_path / "errorloop.md", "macro-F1, TTA")
    assert rows == {"control": (0.79, 0.01, 3), "hard-examples": (0.84, 0.01, 3),
                    "heavy-confused": (0.78, 0.0, 1)}
    text = report.write_task_report(tmp_path)[0].read_text()
    section = text.split("## 5.")[1].split("## 6.")[0]
    assert "hard-examples 0.8400 against control 0.7900 (+5.00 points, beyond seed noise" in section
    assert "| heavy-confused | 0.7800 | 1 | -1.00 (1 and 3 seeds: no spread yet) |" in section
    assert "| hard-examples | 0.8400 ± 0.0100 | 3 | +5.00 (beyond noise, 2 SE 1.63) |" in section
    # no archive/balancing.md in this folder
    assert "**Answer.**\n\nBest, by test macro-F1: pending." in text.split("## 4.")[1]
