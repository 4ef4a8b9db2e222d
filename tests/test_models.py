import pytest
import torch
import torch.nn as nn

import models


@pytest.mark.parametrize("block", [models.SE, models.CBAM])
def test_attention_keeps_shape_and_reweights(block):
    x = torch.randn(2, 32, 7, 5)
    y = block(32)(x)
    assert y.shape == x.shape and not torch.allclose(x, y)


@pytest.mark.parametrize("arch", ["smallcnn", "poolcnn", "efficientnet_lite0", "resnet18",
                                  "mobilenet_v3_large", "convnext_tiny"])
@pytest.mark.parametrize("attention", ["none", "se", "cbam"])
def test_every_model_gives_one_logit_per_class(arch, attention):
    model, mean, std = models.build_model(arch, 7, attention=attention, drop=0.2)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7) and len(mean) == len(std) == 3
    if attention != "none":
        kinds = {type(m).__name__ for m in model.modules()}
        assert {"se": "SE", "cbam": "CBAM"}[attention] in kinds


def test_poolcnn_pools_after_each_stages_first_conv_at_under_half_the_work():
    x = torch.randn(1, 3, 64, 64)
    work = {}
    for arch in ("smallcnn", "poolcnn"):
        model = models.build_model(arch, 3)[0]
        macs = []
        model.features.apply(lambda m: isinstance(m, nn.Conv2d) and m.register_forward_hook(
            lambda conv, _, out: macs.append(out[0].numel() * conv.in_channels * 9)))
        assert model.features(x).shape == (1, 256, 4, 4)  # the same channels and 1/16 resolution
        work[arch] = sum(macs)
    assert work["poolcnn"] < 0.5 * work["smallcnn"]


def test_smallcnn_width_sets_its_channels():
    narrow, wide = (models.build_model("smallcnn", 3, width=w)[0] for w in (8, 16))
    assert narrow.head.in_features == 64 and wide.head.in_features == 128  # 8x the first stage
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())
    with pytest.raises(models.UserError, match="width"):
        models.build_model("efficientnet_lite0", 3, width=16)


@pytest.mark.parametrize("arch, first_two", [
    ("efficientnet_lite0", ("0.", "1.", "2.0.", "2.1.")),  # conv_stem, bn1, blocks.0, blocks.1
    ("resnet18", ("0.", "1.", "4.", "5.")),  # conv1, bn1 (relu, maxpool), layer1, layer2
    ("mobilenet_v3_large", ("0.", "1.", "2.")),
    ("timm:resnet18", ("net.conv1.", "net.bn1.", "net.layer1.", "net.layer2."))])
def test_early_stages_are_the_stem_then_whole_stages_in_forward_order(arch, first_two):
    model, _, _ = models.build_model(arch, 3)
    frozen = models.early_stages(model, arch, 2)
    names = {id(p): name for name, p in model.features.named_parameters()}
    assert {names[id(p)] for m in frozen for p in m.parameters()} == \
        {name for name in names.values() if name.startswith(first_two)}
    for module in frozen:
        module.requires_grad_(False)
    model(torch.randn(2, 3, 64, 64)).sum().backward()  # the backward pass stops above them
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert all(p.grad is not None for p in model.features.parameters() if p.requires_grad)


def test_early_stages_refuse_smallcnn_and_the_whole_backbone():
    with pytest.raises(models.UserError, match="scratch"):
        models.early_stages(models.build_model("smallcnn", 3)[0], "smallcnn", 1)
    lite = models.build_model("efficientnet_lite0", 3)[0]
    assert len(models.early_stages(lite, "efficientnet_lite0", 6)) == 2 + 6
    with pytest.raises(models.UserError, match="7 stages"):
        models.early_stages(lite, "efficientnet_lite0", 7)
    timm_resnet = models.build_model("timm:resnet18", 3)[0]  # timm's stem and layer1-4, not its head
    net = timm_resnet.features.net
    assert {id(p) for m in models.early_stages(timm_resnet, "timm:resnet18", 3) for p in m.parameters()} == \
        {id(p) for m in (net.conv1, net.bn1, net.layer1, net.layer2, net.layer3) for p in m.parameters()}
    with pytest.raises(models.UserError, match="4 stages"):
        models.early_stages(timm_resnet, "timm:resnet18", 4)


def test_offline_imagenet_weights_are_real():
    """scikit-learn's flower photo is a daisy: ImageNet class 985 must be in the top 5."""
    top5 = models.imagenet_top5("efficientnet_lite0")
    assert 985 in [index for index, _ in top5]


def test_pretrained_backbone_loads_the_packaged_weights():
    model, mean, std = models.build_model("efficientnet_lite0", 3, pretrained=True)
    weights = models.lite_weights("efficientnet_lite0")
    assert torch.equal(model.features[0].weight, weights["_conv_stem.weight"])
    assert mean == (0.5, 0.5, 0.5)


def test_unknown_or_impossible_choices_are_user_errors():
    with pytest.raises(models.UserError):
        models.build_model("smallcnn", 3, pretrained=True)
    with pytest.raises(models.UserError):
        models.build_model("vgg11", 3)


def test_failed_weight_download_says_where_to_put_the_file(monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(models.UserError, match=r"resnet18-f37072fd\.pth.*checkpoints"):
        models.build_model("resnet18", 3, pretrained=True)


def test_any_timm_or_torchvision_backbone_takes_a_local_weights_file(tmp_path, competition, monkeypatch):
    import timm
    import torchvision

    import train
    from models import build_model
    from utils import UserError
    timm_file, tv_file = tmp_path / "timm_resnet18.pth", tmp_path / "tv_resnet18.pth"
    reference = timm.create_model("resnet18", pretrained=False)
    torch.save(reference.state_dict(), timm_file)
    torch.save(torchvision.models.resnet18().state_dict(), tv_file)
    model, mean, std = build_model("timm:resnet18", 3, weights_file=timm_file)
    assert (torch.equal(model.features.net.conv1.weight, reference.conv1.weight)
            and model.head.out_features == 3)
    assert mean == (0.485, 0.456, 0.406)
    assert build_model("resnet18", 3, weights_file=tv_file)[0].head.in_features == 512
    wrong = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), wrong)
    with pytest.raises(UserError, match="does not fit timm:resnet18: .* keys missing"):
        build_model("timm:resnet18", 3, weights_file=wrong)
    monkeypatch.chdir(tmp_path)
    run_dir = train.main(["--data", str(competition), "--arch", "timm:resnet18", "--weights", str(timm_file),
                          "--epochs", "1", "--img-size", "32", "--workers", "0", "--name", "timm"])
    import predict
    predict.main(["--run", str(run_dir), "--workers", "0"])
    assert (run_dir / "test_metrics.json").is_file()


def test_grad_cam_lights_up_where_the_class_evidence_is():
    from models import Classifier
    model = Classifier(nn.Identity(), num_features=3, num_classes=2).eval()
    with torch.no_grad():  # class 0 reads channel 0 alone, class 1 channel 1
        model.head.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    x = torch.zeros(2, 3, 8, 8)
    x[:, 0, :2, :2] = 1.0  # channel 0's evidence in the top-left corner
    x[:, 1, 6:, 6:] = 1.0  # channel 1's in the bottom-right
    cam = model.grad_cam(x, torch.tensor([0, 1]))
    assert cam.shape == (2, 8, 8) and cam.min() >= 0 and torch.allclose(cam.amax((1, 2)), torch.ones(2))
    assert cam[0, :2, :2].min() == 1 and cam[0, 4:].max() == 0
    assert cam[1, 6:, 6:].min() == 1 and cam[1, :4].max() == 0
