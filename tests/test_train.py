import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from conftest import make_competition
from utils import SPEED_FLAGS, UserError, ema_update


def read_log(run_dir):
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def settings(*argv):
    """train.py's settings for this command line, before the data derives any (train.resolve_settings)."""
    return train.resolve_settings(train.parse_args(list(argv)))[0]


def tiny_args(data, *extra):
    return ["--data", str(data), "--img-size", "32", "--batch-size", "8", "--workers", "0", "--block", "4",
            *extra]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_at_gamma_zero_is_cross_entropy(weighted, smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    weight = torch.rand(5) + 0.5 if weighted else None
    focal = train.FocalLoss(0.0, weight, smoothing)(logits, target)
    ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    assert torch.allclose(focal, ce, atol=1e-6)
    assert train.FocalLoss(2.0, weight, smoothing)(logits, target) < ce  # and down-weights easy examples


def test_schedule_rises_linearly_to_peak_at_end_of_warmup_then_anneals():
    factor = train.LRSchedule("onecycle", warmup_steps=10, total_steps=50)
    values = [factor(s) for s in range(50)]
    assert np.allclose(values[:10], np.arange(1, 11) / 10)  # linear, peak exactly at the last warmup step
    assert max(values) == values[9] == 1.0
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then never rises again
    assert values[-1] < 0.02


def test_every_schedule_warms_up_then_follows_its_shape():
    cosine, step, plateau = (train.LRSchedule(kind, 10, 110, patience=2)
                             for kind in ("cosine", "step", "plateau"))
    assert [f(4) for f in (cosine, step, plateau)] == [0.5] * 3
    assert cosine(109) < 1e-3 and step(59) == 1 and step(60) == 0.1 and step(85) == pytest.approx(0.01)
    assert [plateau.epoch_end(bad) for bad in (0, 1, 2, 3, 4)] == [False, False, True, False, True]
    assert plateau(50) == pytest.approx(0.01)
    restored = train.LRSchedule("plateau", 10, 110)
    restored.__dict__.update(plateau.__dict__)  # what LambdaLR's state_dict keeps of a callable object
    assert restored(50) == plateau(50)


def test_early_stopping_waits_until_the_learning_rate_has_annealed():
    """A stalled metric ends a run only once the learning rate is down to a tenth of its peak."""
    model = torch.nn.Linear(2, 2)
    # 10 epochs of 10 steps, 1 warmup
    for kind, first_allowed in (("onecycle", 9), ("cosine", 9), ("step", 6)):
        args = settings("--schedule", kind, "--epochs", "10", "--warmup-epochs", "1", "--lr", "0.1")
        optimizer, scheduler = train.make_optimizer(args, model, steps_per_epoch=10)
        allowed = []
        for _ in range(10 * 10):
            optimizer.step()
            scheduler.step()
            if scheduler.last_epoch % 10 == 0:  # an epoch's end
                allowed.append(train.annealed(optimizer))
        assert allowed == [False] * (first_allowed - 1) + [True] * (11 - first_allowed), kind


def test_focal_switches_on_when_the_metric_stalls(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a learning rate of zero never improves: stalled for 2 epochs after epoch 3, focal from epoch 4
    run_dir = train.main(tiny_args(competition, "--epochs", "5", "--lr", "0", "--monitor", "val_loss",
                                   "--switch-to-focal-on-plateau", "2", "--schedule", "plateau",
                                   "--name", "stall"))
    assert [r["loss_fn"] for r in read_log(tmp_path / run_dir)] == ["ce", "ce", "ce", "focal", "focal"]


def test_ema_decay_warms_up_then_holds():
    update = ema_update(0.999)
    for n, expected in ((0, 0.9), (90, 1 - 91 / 100), (10**6, 0.001)):  # weight of the new weights: 1 - decay
        averaged, counter = [torch.zeros(3)], [torch.tensor(5)]
        update(averaged, [torch.ones(3)], torch.tensor(n))
        update([counter[0]], [torch.tensor(7)], torch.tensor(n))
        assert torch.allclose(averaged[0], torch.full((3,), expected)) and counter[0].item() == 7


def test_switch_to_focal_epoch():
    args = settings("--switch-to-focal-epoch", "3")
    assert [train.make_criterion(args, e, None)[1] for e in (1, 2, 3, 4)] == ["ce", "ce", "focal", "focal"]
    assert train.make_criterion(args, 3, None)[0].gamma == args.focal_gamma


def derived(argv, short_side, images):
    from data import Split
    split = Split([f"{i}.jpg" for i in range(images)], ["a"] * images, sizes=np.full((images, 2), short_side))
    args, sources = train.resolve_settings(train.parse_args(argv), train=split)
    # from the data
    why = {key: why for key, why in sources.items() if key in ("img_size", "batch_size", "epochs")}
    return (args.arch, args.img_size, args.batch_size, args.epochs, args.optimizer), why


def test_defaults_follow_the_model_kind_and_the_data():
    # vehicles6-like: 100 px, 3,300 training images
    assert derived([], 100, 3300)[0] == ("poolcnn", 64, 32, 14, "sgd")
    assert derived(["--pretrained"], 100, 3300)[0] == ("efficientnet_lite0", 160, 32, 5, "adamw")
    # pretrained, photos and tiny images alike are resized to 160 px
    assert derived(["--pretrained"], 480, 3300)[0][1:4] == (160, 32, 5)
    assert derived(["--pretrained"], 28, 6000)[0][1] == 160
    # 28 px grayscale from scratch: 32 px, twice the epochs of 64 px
    assert derived([], 28, 6000)[0][1:4] == (32, 32, 28)
    # utilityvehicles10-like: 1,362 images, 42 steps an epoch: 200 steps keep the pretrained 5 epochs
    assert derived(["--pretrained"], 400, 1362)[0][3] == 5
    # a small dataset: batches of 16 and at least the budget's steps, within 3x its epochs
    (_, _, batch, epochs, _), why = derived(["--pretrained"], 224, 400)
    assert (batch, epochs) == (16, 8) and set(why) == {"img_size", "batch_size", "epochs"}
    assert derived([], 100, 400)[0][2:4] == (16, 14)  # 300 steps of 25: 12 epochs, under the budget's 14
    assert derived(["--img-size", "96"], 100, 100)[0][2:4] == (16, 27)  # 300 steps of 6: 50, capped 3 x 9
    # what the user gives is kept, and not reported as derived
    (_, size, batch, epochs, _), why = derived(["--img-size", "96", "--batch-size", "8", "--epochs", "2"],
                                               100, 3300)
    assert (size, batch, epochs, why) == (96, 8, 2, {})


def test_progressive_resizing_is_derived_pretrained_only():
    """Pretrained, the first epochs train at 80% of the input size (to 8 px); from scratch, at
    --init (fine-tuning) and where nothing is smaller than the input size, not at all; 0 turns it off."""
    from data import Split
    split = Split(["0.jpg"] * 400, ["a"] * 400, sizes=np.full((400, 2), 100))

    def progressive(*argv, init=None):
        args, sources = train.resolve_settings(train.parse_args(list(argv)), train=split, init=init)
        return args.progressive, sources.get("progressive")
    assert progressive("--pretrained") == (128, "80% of the input size")
    assert progressive("--pretrained", "--img-size", "224")[0] == 176  # 179.2, to 8 px
    assert progressive("--pretrained", "--img-size", "16") == (0, "backbone default: off")
    assert progressive() == (0, "scratch default: off")
    assert progressive("--pretrained", "--progressive", "0") == (0, None)
    assert progressive("--pretrained", "--progressive", "96") == (96, None)
    init = {"arch": "efficientnet_lite0", "attention": "none", "drop": 0.0, "width": None, "img_size": 160,
            "upscale": "bicubic", "vflip": False}
    assert progressive("--init", "runs/x", init=init)[0] == 0
    with pytest.raises(SystemExit):
        train.parse_args(["--progressive", "8"])  # neither off nor a size


def test_the_test_size_is_larger_after_heavy_augmentation_crops():
    """predict.py tests at 10% over the input size (to 8 px) after --aug heavy, whose random crops show
    objects larger than the whole image does; at the input size after the others; --test-size wins."""
    from data import Split
    split = Split(["0.jpg"] * 400, ["a"] * 400, sizes=np.full((400, 2), 100))

    def test_size(*argv):
        args, sources = train.resolve_settings(train.parse_args(list(argv)), train=split)
        return args.test_size, sources.get("test_size")
    assert test_size("--pretrained", "--aug", "heavy") == (176, "10% over the input size: --aug heavy's "
                                                                "crops")
    assert test_size("--pretrained", "--aug", "heavy", "--img-size", "192")[0] == 208
    assert test_size("--aug", "heavy", "--img-size", "128")[0] == 144
    assert test_size("--aug", "heavy", "--img-size", "80")[0] == 88  # 16 px steps would make it 96
    assert test_size("--pretrained", "--aug", "light") == (160, "the input size")
    assert test_size("--pretrained", "--aug", "heavy", "--test-size", "160") == (160, None)


def test_loader_workers_default_follows_the_device_and_the_model(monkeypatch):
    from utils import loader_workers
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    # loading in the main process: both cores stay the model's
    assert loader_workers(None, cpu, "smallcnn") == 0
    assert loader_workers(None, cpu, "efficientnet_lite0") == 1
    assert loader_workers(None, gpu, "smallcnn") == 1
    assert loader_workers(3, cpu, "smallcnn") == 3  # --workers is kept
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert loader_workers(None, cpu, "smallcnn") == loader_workers(None, gpu, "smallcnn") == 8


def test_run_folder_has_config_log_curves_and_checkpoints(trained_run):
    _, _, run_dir = trained_run
    for name in ("config.json", "log.csv", "curves.png", "best.pt", "last.pt", "split.csv"):
        assert (run_dir / name).is_file(), name
    rows = read_log(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"lr", "train_loss", "val_loss", "val_acc", "val_f1", "seconds"} <= set(rows[0])
    environment = json.loads((run_dir / "config.json").read_text())["environment"]
    # what explains a run's speed
    assert environment["torch"] == torch.__version__ and environment["cpu_capability"]
    assert set(environment["cpu_flags"]) <= set(SPEED_FLAGS)


def test_early_stopping_stops(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a learning rate of zero cannot improve anything: patience 2 stops after epoch 3 of 10
    run_dir = train.main(tiny_args(competition, "--epochs", "10", "--lr", "0", "--patience", "2", "--monitor",
                                   "val_loss", "--name", "stop"))
    assert len(read_log(tmp_path / run_dir)) == 3


def test_resume_continues_the_same_run_exactly(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = tiny_args(competition, "--epochs", "3", "--ema", "0.9", "--balance", "sampler", "--aug", "heavy")
    train.main(common + ["--name", "whole"])

    real_save = train.save_checkpoint

    def crash_after_epoch_2(state, is_best, run_dir):
        real_save(state, is_best, run_dir)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.main(common + ["--name", "crashed"])
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert train.main(["--resume", "runs/crashed", "--workers", "0"]).name == "crashed"

    whole, resumed = read_log(tmp_path / "runs/whole"), read_log(tmp_path / "runs/crashed")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    for key in ("train_loss", "val_loss", "lr"):
        assert math.isclose(float(whole[2][key]), float(resumed[2][key]), rel_tol=1e-5), key


def test_a_run_saved_before_progressive_resizing_was_derived_resumes_without_it():
    from data import Split
    split = Split(["0.jpg"] * 400, ["a"] * 400, sizes=np.full((400, 2), 100))
    saved = vars(train.parse_args(["--pretrained", "--img-size", "192", "--epochs", "7"]))
    resumed, _ = train.resolve_settings(train.parse_args(["--resume", "runs/x"]), train=split,
                                        resumed={"args": saved})
    assert (resumed.progressive, resumed.img_size, resumed.epochs) == (0, 192, 7)


def test_resume_refuses_a_wrong_file(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"junk")
    with pytest.raises(UserError):
        train.main(["--resume", str(tmp_path / "nothing")])


def test_freeze_epochs_train_only_the_head(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / train.main(tiny_args(competition, "--epochs", "1", "--freeze-epochs", "1",
                                              "--name", "frozen", "--ema", "0"))
    state = torch.load(run_dir / "last.pt", weights_only=False)
    from models import build_model
    torch.manual_seed(0)
    fresh, _, _ = build_model(state["inference"]["arch"], 3)  # the default small CNN
    first_conv = next(k for k in state["model"] if k.startswith("features.") and k.endswith("weight"))
    assert torch.equal(state["model"][first_conv], fresh.state_dict()[first_conv])  # untouched backbone
    assert read_log(run_dir)[0]["head_only"] == "True"


def test_freeze_stages_keeps_the_stem_and_early_stages(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / train.main(tiny_args(competition, "--arch", "efficientnet_lite0", "--epochs", "2",
                                              "--freeze-stages", "1", "--name", "stages", "--ema", "0"))
    state = torch.load(run_dir / "last.pt", weights_only=False)["model"]
    from models import build_model
    torch.manual_seed(0)
    fresh = build_model("efficientnet_lite0", 3)[0].state_dict()
    same = {k for k in state if k.startswith("features.") and k.endswith("weight")
            and torch.equal(state[k], fresh[k])}
    frozen = ("features.0.", "features.1.", "features.2.0.")  # the stem and the first stage
    assert same == {k for k in state if k.startswith(frozen) and k.endswith("weight")}  # the rest trained
    assert json.loads((run_dir / "config.json").read_text())["args"]["freeze_stages"] == 1


def test_width_is_kept_for_prediction(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / train.main(tiny_args(competition, "--epochs", "1", "--width", "8",
                                              "--name", "narrow"))
    from models import load_run
    model, _ = load_run(run_dir)
    assert model.head.in_features == 64
    tuned = tmp_path / train.main(tiny_args(competition, "--epochs", "1", "--init", str(run_dir),
                                            "--name", "tuned"))
    assert load_run(tuned)[0].head.in_features == 64  # fine-tuning keeps the run's width


def test_kill_9_then_resume_matches_the_uninterrupted_run(tmp_path, competition):
    """A training killed with SIGKILL at an arbitrary moment of epoch 3, then resumed, ends with the
    same log.csv, best.pt and last.pt as a run never interrupted, and no temporary files."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    common = [sys.executable, str(ROOT / "train.py"), *tiny_args(competition, "--epochs", "4", "--ema", "0.9",
                                                                  "--aug", "heavy")]
    subprocess.run(common + ["--name", "whole"], cwd=tmp_path, check=True, capture_output=True)
    victim = subprocess.Popen(common + ["--name", "killed"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    log = tmp_path / "runs" / "killed" / "log.csv"
    while victim.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)  # somewhere in epoch 3
    victim.wait()
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "runs/killed",
                              "--workers", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole, killed = read_log(tmp_path / "runs/whole"), read_log(tmp_path / "runs/killed")
    assert [r["epoch"] for r in killed] == ["1", "2", "3", "4"]
    for a, b in zip(whole, killed):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert math.isclose(float(a[key]), float(b[key]), rel_tol=1e-5), key
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(tmp_path / "runs" / run / name, weights_only=True) for run in ("whole", "killed"))
        assert a["epoch"] == b["epoch"]
        for key, tensor in a["model"].items():
            assert torch.allclose(tensor.float(), b["model"][key].float(), atol=1e-5), key
    assert not list((tmp_path / "runs" / "killed").glob("*.tmp"))


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / train.main(tiny_args(competition, "--epochs", "1", "--name", "busy"))
    from utils import lock_run
    held = lock_run(run_dir)
    with pytest.raises(UserError, match="in use by another training process"):
        train.main(["--resume", str(run_dir), "--workers", "0"])
    held.close()
    # free again: resumes (nothing left)
    assert train.main(["--resume", str(run_dir), "--workers", "0"]) == run_dir


def test_same_name_twice_gets_two_folders_and_an_unwritable_runs_is_one_line(tmp_path, competition,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train.main(tiny_args(competition, "--epochs", "1", "--name", "twin"))
    second = train.main(tiny_args(competition, "--epochs", "1", "--name", "twin"))
    assert (first.name, second.name) == ("twin", "twin-2")
    import utils
    (tmp_path / "a-file").write_text("")  # runs/ beneath a file cannot be made, even by root
    monkeypatch.setattr(utils, "RUNS_DIR", tmp_path / "a-file" / "runs")
    with pytest.raises(UserError, match="cannot create a run folder"):
        train.main(tiny_args(competition, "--epochs", "1", "--name", "third"))


def test_torchrun_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """2 CPU processes (gloo) of 8 images a step against 1 process of 16: the same images in every
    step, so the losses stay close (only BatchNorm sees 8 images at a time); the run predicts; and a
    resumed distributed run repeats the uninterrupted one exactly."""
    import subprocess
    import sys

    from conftest import ROOT
    comp = make_competition(tmp_path / "comp", per_class=40)
    common = ["--data", str(comp), "--img-size", "32", "--workers", "0", "--block", "4", "--drop", "0",
              "--aug", "none", "--epochs", "3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517", str(ROOT / "train.py")]

    def launch(command):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    launch([sys.executable, str(ROOT / "train.py"), *common, "--batch-size", "16", "--name", "one"])
    launch([*torchrun, *common, "--batch-size", "8", "--name", "two"])
    one, two = read_log(tmp_path / "runs/one"), read_log(tmp_path / "runs/two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert math.isclose(float(a["train_loss"]), float(b["train_loss"]), rel_tol=0.25)
        assert float(a["lr"]) == pytest.approx(float(b["lr"]))  # the same number of optimizer steps
    predicted = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--run", "runs/two",
                                "--workers", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert predicted.returncode == 0 and "| all |" in predicted.stdout
    import os
    import signal
    import time
    victim = subprocess.Popen([*torchrun, *common, "--batch-size", "8", "--name", "killed"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = tmp_path / "runs" / "killed" / "log.csv"
    while victim.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)  # every process, somewhere in epoch 3
    victim.wait()
    launch([*torchrun, "--resume", "runs/killed", "--workers", "0"])
    for a, b in zip(two, read_log(tmp_path / "runs/killed")):
        assert math.isclose(float(a["train_loss"]), float(b["train_loss"]), rel_tol=1e-5)


def test_init_from_a_run_of_other_classes_keeps_all_but_the_head(tmp_path, competition, monkeypatch):
    """Extra real data: a small CNN trained on another dataset starts this one; only the head is new."""
    monkeypatch.chdir(tmp_path)
    other = make_competition(tmp_path / "other", per_class=8)
    (other / "train" / "blue").rename(other / "train" / "navy")
    source = tmp_path / train.main(tiny_args(other, "--epochs", "1", "--name", "other", "--width", "8"))
    tuned = tmp_path / train.main(tiny_args(competition, "--epochs", "1", "--init", str(source), "--lr", "0",
                                            "--name", "tuned"))
    a, b = (torch.load(run / "best.pt", weights_only=True)["model"] for run in (source, tuned))
    conv = next(k for k in a if k.startswith("features.") and k.endswith("weight"))
    assert torch.equal(a[conv], b[conv]) and a["head.weight"].shape == b["head.weight"].shape
    assert not torch.equal(a["head.weight"], b["head.weight"])  # a fresh head for the new classes


def test_a_saturated_validation_accuracy_still_follows_the_loss():
    """Every validation image right from epoch 1 on: the later, lower-loss epochs are the best ones,
    and early stopping does not end a run that is still improving its loss."""
    stopper = train.EarlyStopping("val_acc", patience=2)
    epochs = [{"val_acc": 1.0, "val_loss": loss} for loss in (0.30, 0.20, 0.10, 0.12, 0.11)]
    assert [stopper.update(m) for m in epochs] == [True, True, True, False, False] and stopper.stop
    assert stopper.best_value == 1.0
    loss_only = train.EarlyStopping("val_loss", patience=5)
    assert [loss_only.update(m) for m in epochs[:3]] == [True, True, True] and loss_only.best_value == 0.10


def test_settings_are_resolved_once_and_frozen():
    resolved, sources = train.resolve_settings(train.parse_args(["--lr", "0.01"]))
    assert (resolved.arch, resolved.lr, resolved.optimizer) == ("poolcnn", 0.01, "sgd")
    # what was given is not reported
    assert sources["optimizer"] == "scratch default" and "lr" not in sources
    with pytest.raises(AttributeError, match="fixed once resolved"):
        resolved.epochs = 3


def test_init_of_a_backbone_takes_the_backbones_defaults():
    """--init of an efficientnet run without --pretrained: its model and input, and the recipe of its
    kind (AdamW), not the small CNN's, which the command line's arch alone would give."""
    init = {"arch": "efficientnet_lite0", "attention": "none", "drop": 0.0, "width": None, "img_size": 160,
            "upscale": "bicubic", "vflip": False}
    resolved, sources = train.resolve_settings(train.parse_args(["--init", "runs/x"]), init=init)
    assert (resolved.arch, resolved.img_size, resolved.optimizer, resolved.lr) == ("efficientnet_lite0", 160,
                                                                                   "adamw", 1e-3)
    assert sources["arch"] == "--init runs/x"


def test_progressive_resizing_grows_to_the_full_size_for_the_last_third():
    progressive = settings("--img-size", "160", "--epochs", "9", "--progressive", "96")
    assert [train.epoch_img_size(progressive, e) for e in range(1, 10)] == [96, 112, 112, 128, 144, 144,
                                                                            160, 160, 160]
    plain = settings("--img-size", "160", "--epochs", "9")
    assert {train.epoch_img_size(plain, e) for e in range(1, 10)} == {160}
    with pytest.raises(UserError, match="must be below the input size"):
        settings("--img-size", "160", "--progressive", "160")


def test_progressive_resizing_trains_the_first_epochs_on_smaller_batches(tmp_path, competition, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    shapes = []
    resize = train.resize_batch
    monkeypatch.setattr(train, "resize_batch",
                        lambda images, size: shapes.append((images.shape[-1], size)) or resize(images, size))
    train.main(tiny_args(competition, "--epochs", "3", "--progressive", "16", "--name", "progressive"))
    assert shapes and set(shapes) == {(32, 16)}  # only the first epoch's batches, shrunk on the device
    out = capsys.readouterr().out
    assert "epoch   1 at 16 px" in out and "epoch   3 at 32 px" in out


@pytest.mark.parametrize("every, draws", [(1e9, 1), (-1, 3)])  # never while training / every epoch, + the end
def test_curves_are_drawn_at_most_every_plot_every_s_and_at_the_end(tmp_path, competition, monkeypatch,
                                                                     every, draws):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "PLOT_EVERY_S", every)
    calls = []
    plot = train.plot_curves
    monkeypatch.setattr(train, "plot_curves", lambda rows, path: calls.append(len(rows)) or plot(rows, path))
    run_dir = tmp_path / train.main(tiny_args(competition, "--epochs", "2", "--name", f"plots{draws}"))
    assert calls[-1] == 2 and len(calls) == draws and (run_dir / "curves.png").stat().st_size > 1000
