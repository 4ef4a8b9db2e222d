import json
import shutil

import pytest

import experiments
from utils import UserError, load_checkpoint

TINY = ["--epochs", "1", "--img-size", "32", "--batch-size", "8", "--block", "4"]
FINDINGS = ["plain learns the colours.", "The fallback trains **without** the missing data."]


def write_grids(path, rows, settings=TINY, prepare=("python gan.py --epochs 1",), findings=FINDINGS):
    path.write_text(json.dumps({"tiny": {"description": "two small CNNs", "prepare": list(prepare),
                                         "cpu": settings, "full": [], "tta": 2, "findings": findings,
                                         "rows": rows}}))
    return path


def findings_section(findings):
    """What a report shows of the grid's findings: under their heading, after the table, before the recall."""
    return "\n\n## Findings\n\n" + "".join(f"{paragraph}\n\n" for paragraph in findings) + "Per-class recall"


def run_grid(work, data, *extra):
    experiments.main(["tiny", "--grids", str(work / "grids.json"), "--data", str(data),
                      "--workers", "0", *extra])
    return (work / "reports" / "tiny.md").read_text()


@pytest.fixture
def grid_work(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_grids(tmp_path / "grids.json", {
        "plain": {"args": ["--arch", "smallcnn"], "note": "the small CNN"},
        "missing": {"args": ["--data", str(tmp_path / "not-made-yet")], "fallback": ["--arch", "smallcnn"]}})
    return tmp_path, competition


def test_grid_report_resumes_without_redoing_finished_runs(grid_work):
    work, data = grid_work
    report = run_grid(work, data, "--seeds", "2")
    assert "python experiments.py tiny --grids" in report and "--seeds 2" in report
    assert "| plain | 2/2 |" in report and " ± " in report and "the small CNN" in report
    assert "First make what the rows need:\n\n```bash\npython gan.py --epochs 1\n```" in report
    assert findings_section(FINDINGS) in report
    assert "| missing (fallback) | 2/2 |" in report and "data folder not found" in report
    assert ((work / "reports" / "tiny_val_curves.png").is_file()
            and (work / "reports" / "tiny_bars.png").is_file())
    runs = work / "runs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["missing-fallback-s0", "missing-fallback-s1",
                                                      "plain-s0", "plain-s1"]

    finished = {p: p.stat().st_mtime_ns for p in (runs / "plain-s0").iterdir()}
    (runs / "plain-s1" / "test_metrics.json").unlink()  # stopped after training, before predict.py finished
    crashed = runs / "missing-fallback-s1"  # stopped before its first epoch ended
    for path in crashed.iterdir():
        if path.name not in ("config.json", "split.csv"):
            path.unlink()
    report = run_grid(work, data, "--seeds", "2")
    assert {p: p.stat().st_mtime_ns for p in (runs / "plain-s0").iterdir()} == finished
    assert (runs / "plain-s1" / "test_metrics.json").is_file() and (crashed / "test_metrics.json").is_file()
    assert len((crashed / "log.csv").read_text().splitlines()) == 2  # started again: one epoch, logged once
    assert "| plain | 2/2 |" in report and "| missing (fallback) | 2/2 |" in report

    write_grids(work / "grids.json", {"plain": ["--arch", "smallcnn"]}, TINY[:-1] + ["5"])
    with pytest.raises(UserError, match="another block than the grid asks"):
        run_grid(work, data, "--seeds", "2")


def test_rows_picks_what_runs_and_the_report_keeps_every_row(grid_work):
    work, data = grid_work
    report = run_grid(work, data, "--seeds", "1", "--rows", "missing")
    assert "| missing (fallback) | 1/1 |" in report and "| plain | 0/1 | pending |" in report
    assert not (work / "runs" / "tiny" / "plain-s0").exists()
    report = run_grid(work, data, "--seeds", "1", "--rows", "plain")
    # kept from the first command
    assert "| plain | 1/1 |" in report and "| missing (fallback) | 1/1 |" in report
    assert "--seeds 1\n" in report and "--rows" not in report  # the command that makes the whole table


def test_report_only_runs_nothing(grid_work):
    work, data = grid_work
    run_grid(work, data, "--seeds", "1", "--rows", "plain")
    report = run_grid(work, data, "--seeds", "2", "--report")
    assert sorted(p.name for p in (work / "runs" / "tiny").iterdir()) == ["plain-s0"]
    assert "| plain | 1/2 |" in report and "| missing | 0/2 | pending |" in report
    assert "--seeds 2\n" in report  # the command that runs the grid, not --report
    assert "hardware of the runs: " in report and "torch threads), " in report
    assert findings_section(FINDINGS) in report


def test_the_record_stands_in_for_deleted_runs_only_while_the_grid_asks_the_same(grid_work):
    work, data = grid_work
    first = run_grid(work, data, "--seeds", "1", "--rows", "plain")
    record = json.loads((work / "reports" / "tiny.json").read_text())
    assert list(record) == ["plain-s0"] and record["plain-s0"]["predict"] == ["--tta", "2"]
    assert record["plain-s0"]["train"][-4:] == ["--seed", "0", "--name", "tiny/plain-s0"]
    shutil.rmtree(work / "runs")
    table = first.partition("| plain |")[2].partition("\n")[0]
    # the same figures, no runs
    assert "| plain |" + table in run_grid(work, data, "--seeds", "1", "--report")
    # as on a fresh clone: seed 0 is not retrained
    report = run_grid(work, data, "--seeds", "2", "--rows", "plain")
    assert sorted(p.name for p in (work / "runs" / "tiny").iterdir()) == ["plain-s1"]
    assert "| plain | 2/2 |" in report and "| plain |" + table not in report
    write_grids(work / "grids.json", {"plain": ["--arch", "smallcnn"]}, TINY[:1] + ["2"] + TINY[2:])
    # 2 epochs: not that run
    assert "| plain | 0/1 | pending |" in run_grid(work, data, "--seeds", "1", "--report")


def test_every_committed_report_carries_its_grids_findings():
    grids = json.loads(experiments.GRIDS_FILE.read_text())
    reports = {path: path.read_text() for path in (experiments.GRIDS_FILE.parent / "reports").glob("*.md")}
    tags = {path: report.partition("\n")[0].removeprefix("# Grid `").removesuffix("`")
            for path, report in reports.items() if report.startswith("# Grid `")}
    assert tags, "no grid reports found"
    for path, tag in tags.items():
        grid = grids[tag.removesuffix("-full")]
        assert grid.get("findings"), f"grid of {path.name} has no findings"
        assert findings_section(grid["findings"]) in reports[path], \
            f"{path.name}: its findings differ from grids.json: python experiments.py GRID --findings"


def test_findings_refresh_rewrites_that_section_alone_and_needs_no_runs(grid_work):
    work, data = grid_work
    report = run_grid(work, data, "--seeds", "1", "--rows", "plain")
    shutil.rmtree(work / "runs")  # a committed report outlives its runs
    grids, path = json.loads((work / "grids.json").read_text()), work / "reports" / "tiny.md"

    def refresh(findings):
        grids["tiny"]["findings"] = findings
        (work / "grids.json").write_text(json.dumps(grids))
        experiments.main(["tiny", "--grids", str(work / "grids.json"), "--data", str(work / "gone"),
                          "--findings"])
        return path.read_text()

    revised = ["plain is enough.", "A second thought,\nover two lines."]
    refreshed = refresh(revised)
    assert findings_section(revised) in refreshed and "learns the colours" not in refreshed
    assert refreshed.replace(findings_section(revised), "\n\nPer-class recall") == \
        report.replace(findings_section(FINDINGS), "\n\nPer-class recall")  # the table and the rest untouched
    without = refresh([])  # a report written before its grid had findings
    assert "## Findings" not in without
    assert without == report.replace(findings_section(FINDINGS), "\n\nPer-class recall")
    assert refresh(FINDINGS) == report  # put back where write_report puts them
    with pytest.raises(UserError, match="tiny-full.md not found"):
        experiments.main(["tiny", "--grids", str(work / "grids.json"), "--full", "--findings"])


def test_bad_grids_are_one_line_errors(grid_work):
    work, data = grid_work
    with pytest.raises(UserError, match="unknown grid 'nope'.*choose from tiny") as e:
        experiments.main(["nope", "--grids", str(work / "grids.json"), "--data", str(data)])
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="row 'plain': train.py rejects .*--mixx"):
        write_grids(work / "grids.json", {"plain": ["--mixx", "up"]})
        run_grid(work, data)
    with pytest.raises(UserError, match="prepare.*list of shell commands"):
        write_grids(work / "grids.json", {"plain": []}, prepare=[["python", "gan.py"]])
        run_grid(work, data)
    with pytest.raises(UserError, match="findings.*list of paragraphs"):
        write_grids(work / "grids.json", {"plain": []}, findings="one paragraph, not in a list")
        run_grid(work, data)
    write_grids(work / "grids.json", {"plain": []})
    with pytest.raises(UserError, match="no row typo"):
        run_grid(work, data, "--rows", "typo")
    with pytest.raises(UserError, match="no labeled test/ and no solution.csv"):
        (data / "solution.csv").unlink()
        run_grid(work, data)
    assert not (work / "runs").exists()


def test_reuse_row_predicts_the_same_model_anew_and_the_report_shows_recall_and_gap(tmp_path, competition,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    grids = {"tiny": {"cpu": TINY, "tta": 1, "predict": ["--data", str(competition)], "baseline": "ce",
                      "reference": "ref", "rows": {
                          "ce": ["--arch", "smallcnn"],
                          "adjusted": {"reuse": "ce", "predict": ["--logit-adjust", "1"]},
                          "ref": ["--arch", "smallcnn", "--epochs", "2"]}}}
    (tmp_path / "grids.json").write_text(json.dumps(grids))
    report = run_grid(tmp_path, competition, "--seeds", "1")
    runs = tmp_path / "runs" / "tiny"
    assert not (runs / "adjusted-s0" / "last.pt").exists()  # nothing was trained for it
    assert (runs / "adjusted-s0" / "best.pt").read_bytes() == (runs / "ce-s0" / "best.pt").read_bytes()
    assert json.loads((runs / "adjusted-s0" / "test_metrics.json").read_text())["logit_adjust"] == 1
    assert json.loads((runs / "ce-s0" / "test_metrics.json").read_text())["logit_adjust"] == 0
    assert ("share of the macro-F1 gap ce → ref closed" in report
            and "(the runs of row ce, predicted anew)" in report)
    ce_row = next(line for line in report.splitlines() if line.startswith("| ce | 1/1"))
    assert ce_row.endswith((" 0.00 |", " no gap |"))  # the baseline closes none of its own gap
    assert "Per-class recall" in report and "| blue | green | red |" in report

    # as on a fresh clone, with no record of adjusted-s0: ce-s0 has only its scores
    shutil.rmtree(tmp_path / "runs")
    record_file = tmp_path / "reports" / "tiny.json"
    record = json.loads(record_file.read_text())
    del record["adjusted-s0"]
    record_file.write_text(json.dumps(record))
    report = run_grid(tmp_path, competition, "--seeds", "1")
    assert "| adjusted | 0/1 | not run |" in report and "which this row reuses, is gone" in report
    assert "| ce | 1/1 |" in report and not (runs / "ce-s0").exists()

    grids["tiny"]["rows"] = {"adjusted": {"reuse": "ce"}, "ce": ["--arch", "smallcnn"]}
    (tmp_path / "grids.json").write_text(json.dumps(grids))
    with pytest.raises(UserError, match="reuse.*listed before it"):
        run_grid(tmp_path, competition)


def test_jobs_run_seeds_side_by_side_and_fall_back_the_same(grid_work):
    """--jobs 2: each seed in processes of its own; a one-line error still sends the row to its fallback."""
    work, data = grid_work
    report = run_grid(work, data, "--seeds", "2", "--jobs", "2")
    assert ("| plain | 2/2 |" in report and "| missing (fallback) | 2/2 |" in report
            and "data folder not found" in report)


def test_seed_in_a_rows_args_fine_tunes_each_seeds_own_run(tmp_path, competition, monkeypatch):
    """--init runs/tiny/base-s{seed}: seed 1's fine-tune starts from seed 1's base run, not seed 0's."""
    monkeypatch.chdir(tmp_path)
    write_grids(tmp_path / "grids.json", {"base": ["--arch", "smallcnn"],
                                          "tuned": ["--init", "runs/tiny/base-s{seed}", "--lr", "0.001"]})
    report = run_grid(tmp_path, competition, "--seeds", "2")
    assert "| tuned | 2/2 |" in report
    for seed in (0, 1):
        config = json.loads((tmp_path / "runs" / "tiny" / f"tuned-s{seed}" / "config.json").read_text())
        assert config["args"]["init"] == f"runs/tiny/base-s{seed}"


def test_settings_derived_from_the_data_do_not_count_as_changed(tmp_path, competition, monkeypatch):
    """A grid that leaves input size and batch to train.py runs again over its finished runs, retraining
    none."""
    monkeypatch.chdir(tmp_path)
    write_grids(tmp_path / "grids.json", {"plain": ["--arch", "smallcnn"]}, ["--epochs", "1", "--block", "4"])
    run_grid(tmp_path, competition, "--seeds", "1")
    best = tmp_path / "runs" / "tiny" / "plain-s0" / "best.pt"
    trained = best.stat().st_mtime_ns
    assert "| plain | 1/1 |" in run_grid(tmp_path, competition, "--seeds", "1")
    assert best.stat().st_mtime_ns == trained


def test_the_report_shows_the_epoch_best_pt_keeps_not_the_epoch_of_best_val_acc(tmp_path, competition,
                                                                                monkeypatch):
    log = [{"epoch": "1", "val_loss": "0.9", "val_acc": "0.60", "val_f1": "0.55"},
           {"epoch": "2", "val_loss": "0.7", "val_acc": "0.80", "val_f1": "0.70"},
           {"epoch": "3", "val_loss": "0.6", "val_acc": "0.75", "val_f1": "0.72"},
           {"epoch": "4", "val_loss": "0.5", "val_acc": "0.80", "val_f1": "0.71"}]
    assert [experiments.kept_row(log, m)["epoch"]
            for m in ("val_loss", "val_acc", "val_f1")] == ["4", "4", "3"]

    monkeypatch.chdir(tmp_path)
    write_grids(tmp_path / "grids.json", {"plain": ["--arch", "smallcnn"]}, TINY[:1] + ["4"] + TINY[2:])
    report = run_grid(tmp_path, competition, "--seeds", "1")
    run = tmp_path / "runs" / "tiny" / "plain-s0"
    summary = json.loads((tmp_path / "reports" / "tiny.json").read_text())["plain-s0"]["summary"]
    assert summary["kept_epoch"] == load_checkpoint(run / "best.pt")["epoch"]
    assert f"| {summary['kept_val_acc']:.4f} |" in report and f"| {summary['kept_epoch']:.1f} |" in report
    assert "*" not in report.split("## Findings")[0].split("| row |")[1]

    record = tmp_path / "reports" / "tiny.json"  # as recorded before summaries held the kept epoch
    runs = json.loads(record.read_text())
    summary = runs["plain-s0"]["summary"]
    summary.update(best_val_acc=summary.pop("kept_val_acc"), best_epoch=summary.pop("kept_epoch"))
    record.write_text(json.dumps(runs))
    shutil.rmtree(run)
    report = run_grid(tmp_path, competition, "--seeds", "1", "--report")
    assert (f"| {summary['best_val_acc']:.4f}* |" in report
            and "\n\\* the best validation accuracy over all" in report)
