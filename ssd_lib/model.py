"""The SSD network (paper Sec. 2.1, Fig. 2): a base network, extra feature layers, and a 3x3
convolutional predictor per source map that outputs, for each of the k default boxes of every
location, 4 offsets and C class scores ((C + 4) * k channels, C counting background).

Usage::

    from ssd_lib.model import ssd300_vgg16
    model = ssd300_vgg16(num_classes=21)                 # 26,285,486 parameters
    loc, logits = model(torch.randn(2, 3, 300, 300))     # (2, 8732, 4), (2, 8732, 21)
"""
from __future__ import annotations

import math

from contextlib import nullcontext

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .priors import PriorConfig, default_boxes, paper_scales

__all__ = [
    "SSD", "L2Norm", "VGG16Backbone", "SmallBackbone", "ModelConfig",
    "ssd300_vgg16", "ssd512_vgg16", "ssd_small", "build_model", "count_parameters",
    "load_torchvision_ssd300", "predict_heads",
]


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (ParseNet; paper Sec. 3.1).

    conv4_3's activations are much larger than those of later layers; normalising them and
    learning the scale (initialised to 20) keeps its predictor's inputs comparable.
    """

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.weight.view(1, -1, 1, 1)


def _conv_relu(cin: int, cout: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, **kw), nn.ReLU(inplace=True)]


def _extra_block(cin: int, mid: int, cout: int, **kw) -> nn.Sequential:
    """An extra feature layer (Sec. 2.1): 1x1 conv to ``mid`` channels, then a 3x3 conv."""
    return nn.Sequential(*_conv_relu(cin, mid, kernel_size=1), *_conv_relu(mid, cout, **kw))


class VGG16Backbone(nn.Module):
    """VGG16 truncated and extended for SSD (Sec. 3, "Base network").

    ``vgg``: conv1_1 .. conv4_3 (pool3 in ceil mode, so conv4_3 is 38x38 at 300x300);
    ``fc``: pool4, conv5_x, pool5 (3x3 stride 1), fc6 as a 3x3 dilated ("atrous") conv with
    1024 channels and dilation 6, fc7 as a 1x1 conv; ``extras``: conv8_2 .. conv11_2 (SSD300)
    or .. conv12_2 (SSD512). ``forward`` returns the source feature maps, largest first.
    ``atrous=False`` replaces the dilated fc6 by a plain 3x3 conv (ablation, Sec. 3.1).
    """

    def __init__(self, variant: str = "ssd300", atrous: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif v == "C":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # 75 -> 38 at 300x300
            else:
                layers += _conv_relu(cin, v, kernel_size=3, padding=1)
                cin = v
        self.vgg = nn.Sequential(*layers)
        self.l2norm = L2Norm(512, scale=20.0)
        dilation = 6 if atrous else 1
        self.fc = nn.Sequential(
            nn.MaxPool2d(2, 2),  # pool4
            *_conv_relu(512, 512, kernel_size=3, padding=1),  # conv5_1
            *_conv_relu(512, 512, kernel_size=3, padding=1),  # conv5_2
            *_conv_relu(512, 512, kernel_size=3, padding=1),  # conv5_3
            nn.MaxPool2d(3, 1, padding=1),  # pool5: 3x3 stride 1 keeps 19x19
            *_conv_relu(512, 1024, kernel_size=3, padding=dilation, dilation=dilation),  # fc6
            *_conv_relu(1024, 1024, kernel_size=1),  # fc7
        )
        extras = [
            _extra_block(1024, 256, 512, kernel_size=3, stride=2, padding=1),  # conv8_2
            _extra_block(512, 128, 256, kernel_size=3, stride=2, padding=1),  # conv9_2
        ]
        if variant == "ssd300":
            extras += [
                _extra_block(256, 128, 256, kernel_size=3),  # conv10_2: 5 -> 3
                _extra_block(256, 128, 256, kernel_size=3),  # conv11_2: 3 -> 1
            ]
        elif variant == "ssd512":
            extras += [
                _extra_block(256, 128, 256, kernel_size=3, stride=2, padding=1),  # conv10_2: 8 -> 4
                _extra_block(256, 128, 256, kernel_size=3, stride=2, padding=1),  # conv11_2: 4 -> 2
                _extra_block(256, 128, 256, kernel_size=4, padding=1),  # conv12_2: 2 -> 1
            ]
        else:
            raise ValueError(f"variant must be 'ssd300' or 'ssd512', got {variant!r}")
        self.extras = nn.ModuleList(extras)
        self.out_channels = (512, 1024, 512, 256) + (256,) * (len(extras) - 2)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.vgg(images)
        features = [self.l2norm(x)]  # conv4_3, normalised
        x = self.fc(x)
        features.append(x)  # fc7
        return features + _extra_features(self.extras, x)


def _extra_features(extras: nn.ModuleList, x: Tensor) -> list[Tensor]:
    """Run the extra feature layers (Sec. 2.1) one after another; returns each one's output.

    Their maps are tiny (down to 1x1). Under CPU bf16 autocast their weight gradients came out NaN
    intermittently (a 3x3 stride-2 conv on a 1x1 map, seen in a 64 px, batch-2 run), so on a CPU they
    run in float32: 2% of the small model's FLOPs at 128 px.
    """
    cpu_amp = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    features = []
    with torch.autocast("cpu", enabled=False) if cpu_amp else nullcontext():
        x = x.float() if cpu_amp else x
        for block in extras:
            x = block(x)
            features.append(x)
    return features


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel_size: int = 3, padding: int | None = None) -> nn.Sequential:
    padding = kernel_size // 2 if padding is None else padding
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A VGG-style base small enough to train on two CPU cores in minutes (the course's model).

    Same SSD machinery as SSD300: a stride-8 map and a stride-16 map from the base network, then
    extra layers (1x1 then 3x3 stride 2) halving the resolution, each a source map. Batch norm
    is the one departure from VGG16: it makes training from scratch fast and stable.
    ``widths``: channels of the five stages; ``num_extras``: extra layers after the base.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 128), num_extras: int = 3,
                 extra_width: int = 128, stride4_source: bool = False) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.stride4_source = stride4_source
        self.stage4 = nn.Sequential(  # stride 4
            _conv_bn_relu(3, w1, stride=2),
            _conv_bn_relu(w1, w2, stride=2), _conv_bn_relu(w2, w2),
        )
        self.stage8 = nn.Sequential(  # stride 8
            _conv_bn_relu(w2, w3, stride=2), _conv_bn_relu(w3, w3), _conv_bn_relu(w3, w3),
        )
        self.stage16 = nn.Sequential(  # stride 16
            _conv_bn_relu(w3, w4, stride=2), _conv_bn_relu(w4, w4), _conv_bn_relu(w4, w5),
        )
        extras, cin = [], w5
        for _ in range(num_extras):
            extras.append(nn.Sequential(
                _conv_bn_relu(cin, extra_width // 2, kernel_size=1),
                _conv_bn_relu(extra_width // 2, extra_width, stride=2),
            ))
            cin = extra_width
        self.extras = nn.ModuleList(extras)
        self.out_channels = ((w2,) if stride4_source else ()) + (w3, w5) + (extra_width,) * num_extras

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stage4(images)
        features = [x] if self.stride4_source else []
        x = self.stage8(x)
        features.append(x)
        x = self.stage16(x)
        features.append(x)
        return features + _extra_features(self.extras, x)


class SSD(nn.Module):
    """Backbone + one (loc, conf) pair of 3x3 predictors per source map; holds its default boxes.

    ``forward(images (B, 3, H, W)) -> (loc (B, P, 4), logits (B, P, C))`` in every mode: the
    loss (:mod:`ssd_lib.loss`) and post-processing (:mod:`ssd_lib.detect`) are separate calls.
    ``priors`` (P, 4) cx, cy, w, h is a non-persistent buffer derived from ``prior_config``.
    """

    def __init__(self, backbone: nn.Module, prior_config: PriorConfig, num_classes: int,
                 config: "ModelConfig | None" = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background, so it must be >= 2 (VOC: 21); got {num_classes}")
        channels = tuple(backbone.out_channels)
        if len(channels) != len(prior_config.feature_maps):
            raise ValueError(
                f"the backbone gives {len(channels)} source maps but the PriorConfig describes "
                f"{len(prior_config.feature_maps)}; give one feature map size per source map"
            )
        self.backbone = backbone
        self.prior_config = prior_config
        self.num_classes = num_classes
        self.config = config
        k = prior_config.boxes_per_location
        self.loc_heads = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(channels, k))
        self.conf_heads = nn.ModuleList(nn.Conv2d(c, a * num_classes, 3, padding=1) for c, a in zip(channels, k))
        self.register_buffer("priors", default_boxes(prior_config), persistent=False)
        self._init_heads()

    def _init_heads(self) -> None:
        for conv in (*self.loc_heads, *self.conf_heads):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    @torch.no_grad()
    def init_background_prior(self, background: float = 0.99) -> "SSD":
        """Start every default box at softmax probability ``background`` for class 0 (the others equal):
        the background logit's bias is log(background * (C - 1) / (1 - background)), the other biases 0.
        Almost every default box is background, so the zero-bias start (1 / C each) spends the first steps
        learning that; the "prior probability" initialisation of RetinaNet (Lin et al., 2017, Sec. 4.1),
        here for a softmax. A recipe probe (benchmarks/recipe_probes.py) measures what it buys."""
        if not 0.0 < background < 1.0:
            raise ValueError(f"background must be a probability in (0, 1); got {background}")
        bias = math.log(background * (self.num_classes - 1) / (1.0 - background))
        for conv in self.conf_heads:
            conv.bias.zero_()
            conv.bias.view(-1, self.num_classes)[:, 0] = bias  # (A * C,) laid out box-major, class-minor
        return self

    @staticmethod
    def _flatten(pred: Tensor, columns: int) -> Tensor:
        """(B, A * columns, H, W) -> (B, H * W * A, columns): location-major, then box (torchvision's order)."""
        B, _, H, W = pred.shape
        return pred.view(B, -1, columns, H, W).permute(0, 3, 4, 1, 2).reshape(B, -1, columns)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
        size = self.prior_config.image_size
        # Check before the backbone runs: a wrong size otherwise fails deep inside it (a 3x3 conv
        # larger than its input, batch norm on a 1x1 map) with a message that does not say why.
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"images are {images.shape[-2]}x{images.shape[-1]} but the default boxes are laid out for "
                f"{size}x{size}: feed images of {size}x{size} (see ssd_lib.augment.SSDTransform)"
            )
        features = self.backbone(images)
        sizes = tuple(f.shape[-1] for f in features)
        if sizes != tuple(self.prior_config.feature_maps) or any(f.shape[-2] != f.shape[-1] for f in features):
            raise ValueError(
                f"source maps are {[tuple(f.shape[-2:]) for f in features]} for input {tuple(images.shape[-2:])}, "
                f"but the default boxes expect sides {self.prior_config.feature_maps}: feed images of "
                f"{self.prior_config.image_size}x{self.prior_config.image_size} (see ssd_lib.augment.SSDTransform)"
            )
        return predict_heads(features, self.loc_heads, self.conf_heads, self.num_classes)


def predict_heads(features: list[Tensor], loc_heads: Sequence[nn.Module], conf_heads: Sequence[nn.Module],
                  num_classes: int) -> tuple[Tensor, Tensor]:
    """SSD's output layer (Sec. 2.1, Fig. 2): run each source map's 3x3 heads and lay out their outputs as the
    default boxes are laid out (:func:`ssd_lib.priors.default_boxes`): map by map, then cell by cell in row-major
    order (row i, then column j), then the k boxes of the cell.

    ``features[i]``: (B, C_i, H_i, W_i); ``loc_heads[i]`` maps it to (B, 4 k_i, H_i, W_i) and ``conf_heads[i]`` to
    (B, num_classes k_i, H_i, W_i). Returns ``loc (B, P, 4)`` and ``logits (B, P, num_classes)``, P = sum k_i H_i W_i.
    """
    loc = torch.cat([SSD._flatten(head(f), 4) for head, f in zip(loc_heads, features)], dim=1)
    logits = torch.cat([SSD._flatten(head(f), num_classes) for head, f in zip(conf_heads, features)], dim=1)
    return loc, logits


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored in checkpoints). ``arch``: 'ssd300', 'ssd512'
    or 'small'; ``priors``: the default-box layout; ``backbone_kwargs``: extra options."""

    arch: str
    num_classes: int
    priors: PriorConfig
    backbone_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        p = dict(d["priors"])
        for key in ("feature_maps", "steps", "min_sizes", "max_sizes"):
            p[key] = tuple(p[key])
        p["aspect_ratios"] = tuple(tuple(r) for r in p["aspect_ratios"])
        return cls(arch=d["arch"], num_classes=int(d["num_classes"]), priors=PriorConfig(**p),
                   backbone_kwargs=dict(d.get("backbone_kwargs", {})))

    @classmethod
    def small(cls, num_classes: int, image_size: int = 128, scales: tuple[float, ...] | None = None,
              aspect_ratios: tuple[tuple[float, ...], ...] | None = None, **backbone_kwargs) -> "ModelConfig":
        """The course's CPU model: maps at strides 8, 16, 32, 64, 128 of a ``image_size`` input.

        ``scales``: m + 1 box sizes as fractions of the image (map k gets s_k and
        s'_k = sqrt(s_k s_{k+1})); default: the paper's formula (Eq. 4) with s_min 0.1, s_max 0.9
        (s_min 0.1 like conv4_3 in SSD300, Sec. 3.1), ratios (2, 3) on the coarsest four maps.

        ``stride4_source=True`` adds a finer first map (stride 4) for tiny objects, with two square
        boxes per cell of 0.06 and sqrt(0.06 * 0.1) of the image (7.7 and 9.9 px at 128 px) in front
        of the same five maps and scales: 3582 default boxes instead of 1534 at 128 px. Why: an
        object under 9 px cannot reach IoU 0.5 with a 12.8 px box even when centred on it, and a
        12 px object reaches it only within about 2 px of a box centre, while the centres of the
        stride-8 map lie 8 px apart. The main job (README) trains this layout.
        """
        num_extras = backbone_kwargs.get("num_extras", 3)
        # Each 3x3 stride-2 conv (padding 1) rounds up: n -> ceil(n / 2), so the maps are ceil(size / stride).
        maps = [-(-image_size // 8), -(-image_size // 16)]
        for _ in range(num_extras):
            maps.append((maps[-1] + 1) // 2)  # 3x3 stride 2 padding 1
        default_ratios = ((2,),) * (len(maps) - 4) + ((2, 3),) * 4
        if backbone_kwargs.get("stride4_source"):
            maps.insert(0, -(-image_size // 4))
            # Squares only: a built-in object under 12 px has w/h within 1:1.8 (ShapesConfig.min_side_px).
            default_ratios = ((),) + default_ratios
            if scales is None:
                scales = (0.06, *paper_scales(len(maps) - 1, 0.1, 0.9), 1.0)
        if aspect_ratios is None:
            aspect_ratios = default_ratios
        if scales is None:
            priors = PriorConfig.from_paper(image_size, tuple(maps), s_min=0.1, s_max=0.9, aspect_ratios=aspect_ratios)
        else:
            if len(scales) != len(maps) + 1:
                raise ValueError(f"scales needs {len(maps) + 1} entries (one per map plus the last s_(m+1)); got {len(scales)}")
            priors = PriorConfig(image_size=image_size, feature_maps=tuple(maps),
                                 steps=tuple(image_size / f for f in maps),
                                 min_sizes=tuple(s * image_size for s in scales[:-1]),
                                 max_sizes=tuple(s * image_size for s in scales[1:]),
                                 aspect_ratios=tuple(tuple(r) for r in aspect_ratios))
        return cls("small", num_classes, priors, dict(backbone_kwargs))


def build_model(config: ModelConfig) -> SSD:
    """Build the SSD described by ``config`` (how checkpoints are restored)."""
    if config.arch not in ("ssd300", "ssd512", "small"):
        raise ValueError(f"unknown arch {config.arch!r}; use 'ssd300', 'ssd512' or 'small'")
    try:
        if config.arch == "small":
            backbone = SmallBackbone(**config.backbone_kwargs)
        else:
            backbone = VGG16Backbone(config.arch, **config.backbone_kwargs)
    except TypeError as exc:  # an option of another backbone (e.g. stride4_source on ssd300)
        raise ValueError(f"the {config.arch} backbone does not take the options {config.backbone_kwargs} ({exc})") from None
    return SSD(backbone, config.priors, config.num_classes, config=config)


def ssd300_vgg16(num_classes: int = 21, atrous: bool = True) -> SSD:
    """SSD300 with the released VOC default boxes (8732). 26,285,486 parameters for 21 classes."""
    kwargs = {} if atrous else {"atrous": False}
    return build_model(ModelConfig("ssd300", num_classes, PriorConfig.ssd300(), kwargs))


def ssd512_vgg16(num_classes: int = 21) -> SSD:
    """SSD512 (7 source maps, 24564 default boxes)."""
    return build_model(ModelConfig("ssd512", num_classes, PriorConfig.ssd512()))


def ssd_small(num_classes: int = 7, image_size: int = 128, **kwargs) -> SSD:
    """The course's small SSD (same machinery, small batch-normed base) for CPU training.
    ``kwargs``: ``scales``/``aspect_ratios`` (default boxes) and backbone options (``widths``...)."""
    return build_model(ModelConfig.small(num_classes, image_size, **kwargs))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_torchvision_ssd300(model: SSD, tv_state_dict: dict[str, Tensor]) -> SSD:
    """Copy the weights of a torchvision ``ssd300_vgg16`` (its ``state_dict()``) into our SSD300.

    torchvision's layout: ``backbone.features`` (= our ``backbone.vgg``), ``backbone.scale_weight``
    (= L2Norm weight), ``backbone.extra.0`` (pool4 .. conv5_3, then fc = pool5, fc6, fc7),
    ``backbone.extra.1..4`` (= our extras), ``head.classification_head`` / ``head.regression_head``.
    Head outputs are in the same order as ours, so raw outputs then agree.
    """
    mapped = {}
    for name, tensor in tv_state_dict.items():
        parts = name.split(".")
        if name.startswith("backbone.features."):
            new = "backbone.vgg." + ".".join(parts[2:])
        elif name == "backbone.scale_weight":
            new = "backbone.l2norm.weight"
        elif name.startswith("backbone.extra.0."):
            idx = int(parts[3])
            if idx == 7:  # the nested fc Sequential: pool5, fc6, relu, fc7, relu
                idx = 7 + int(parts[4])
                rest = parts[5:]
            else:
                rest = parts[4:]
            new = f"backbone.fc.{idx}." + ".".join(rest)
        elif name.startswith("backbone.extra."):
            new = f"backbone.extras.{int(parts[2]) - 1}." + ".".join(parts[3:])
        elif name.startswith("head.classification_head.module_list."):
            new = "conf_heads." + ".".join(parts[3:])
        elif name.startswith("head.regression_head.module_list."):
            new = "loc_heads." + ".".join(parts[3:])
        else:
            continue  # torchvision's transform and anchor generator hold no weights
        mapped[new] = tensor
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise ValueError(f"not a torchvision ssd300_vgg16 state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in mapped.items():
        if own[key].shape != tensor.shape:
            raise ValueError(
                f"{key}: ours {tuple(own[key].shape)} vs torchvision {tuple(tensor.shape)}; "
                "were both models built with the same num_classes?"
            )
    model.load_state_dict(mapped)
    return model
