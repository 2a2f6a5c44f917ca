"""MODNet in PyTorch, written from the paper (Ke et al., "MODNet: Real-Time Trimap-Free
Portrait Matting via Objective Decomposition", AAAI 2022).

A MobileNetV2 backbone feeds three branches: a low-resolution *semantic* branch with
an SE (channel attention) block standing in for the paper's e-ASPP, a high-resolution
*detail* branch that keeps the image's own edges, and a *fusion* branch that combines
both into the alpha matte. Normalisation is IBNorm: half the channels batch-norm, half
instance-norm.

Module and parameter names follow the official implementation, so that its
checkpoints (``modnet_photographic_portrait_matting.ckpt``,
``modnet_webcam_portrait_matting.ckpt``) load as they are. ``forward`` is the inference
path: it returns only the fused matte; the training-only heads (``lr_branch.conv_lr``,
``hr_branch.conv_hr``) exist so those checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HR_CHANNELS = 32
ENC_CHANNELS = (16, 24, 32, 96, 1280)  # MobileNetV2 features at 1/2, 1/4, 1/8, 1/16, 1/32


def _upsample(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


# -- backbone --------------------------------------------------------------------------------

def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped when expansion is 1), 3x3 depthwise, 1x1 project."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inp * expansion
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # expansion t, output channels c, repeats n, first stride s
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, 2)]
        channels = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(_conv_bn_relu6(channels, 1280, 1, 1))
        self.features = nn.Sequential(*features)


class MobileNetV2Backbone(nn.Module):
    STAGES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19))  # feature indices ending at 1/2 ... 1/32

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.model = MobileNetV2(in_channels)
        self.enc_channels = list(ENC_CHANNELS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for start, end in self.STAGES:
            for index in range(start, end):
                x = self.model.features[index](x)
            outputs.append(x)
        return outputs


# -- building blocks -------------------------------------------------------------------------

class IBNorm(nn.Module):
    """Batch norm on the first half of the channels, instance norm on the second half."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bnorm_channels = channels // 2
        self.bnorm = nn.BatchNorm2d(self.bnorm_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(channels - self.bnorm_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.bnorm(x[:, :self.bnorm_channels].contiguous()),
                          self.inorm(x[:, self.bnorm_channels:].contiguous())), 1)


class Conv2dIBNormRelu(nn.Module):
    def __init__(self, inp: int, oup: int, kernel: int, stride: int = 1, padding: int = 0,
                 with_ibn: bool = True, with_relu: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(inp, oup, kernel, stride=stride, padding=padding, bias=True)]
        if with_ibn:
            layers.append(IBNorm(oup))
        if with_relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: global context reweights the channels."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.pool(x).flatten(1))
        return x * weights[:, :, None, None]


# -- branches --------------------------------------------------------------------------------

class LRBranch(nn.Module):
    """Semantic estimation at 1/8 resolution from the backbone's deepest features."""

    def __init__(self, backbone: MobileNetV2Backbone) -> None:
        super().__init__()
        enc = backbone.enc_channels
        self.backbone = backbone
        self.se_block = SEBlock(enc[4], reduction=4)
        self.conv_lr16x = Conv2dIBNormRelu(enc[4], enc[3], 5, padding=2)
        self.conv_lr8x = Conv2dIBNormRelu(enc[3], enc[2], 5, padding=2)
        self.conv_lr = Conv2dIBNormRelu(enc[2], 1, 3, stride=2, padding=1, with_ibn=False, with_relu=False)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc2x, enc4x, _, _, enc32x = self.backbone(img)
        lr16x = self.conv_lr16x(_upsample(self.se_block(enc32x), 2))
        lr8x = self.conv_lr8x(_upsample(lr16x, 2))
        return lr8x, enc2x, enc4x


class HRBranch(nn.Module):
    """Boundary detail at 1/2 resolution from the image and shallow features."""

    def __init__(self, hr: int, enc: list[int]) -> None:
        super().__init__()
        self.tohr_enc2x = Conv2dIBNormRelu(enc[0], hr, 1)
        self.conv_enc2x = Conv2dIBNormRelu(hr + 3, hr, 3, stride=2, padding=1)
        self.tohr_enc4x = Conv2dIBNormRelu(enc[1], hr, 1)
        self.conv_enc4x = Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1)
        self.conv_hr4x = nn.Sequential(Conv2dIBNormRelu(3 * hr + 3, 2 * hr, 3, padding=1),
                                       Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
                                       Conv2dIBNormRelu(2 * hr, hr, 3, padding=1))
        self.conv_hr2x = nn.Sequential(Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
                                       Conv2dIBNormRelu(2 * hr, hr, 3, padding=1),
                                       Conv2dIBNormRelu(hr, hr, 3, padding=1),
                                       Conv2dIBNormRelu(hr, hr, 3, padding=1))
        self.conv_hr = nn.Sequential(Conv2dIBNormRelu(hr + 3, hr, 3, padding=1),
                                     Conv2dIBNormRelu(hr, 1, 1, with_ibn=False, with_relu=False))

    def forward(self, img: torch.Tensor, enc2x: torch.Tensor, enc4x: torch.Tensor,
                lr8x: torch.Tensor) -> torch.Tensor:
        img2x, img4x = _upsample(img, 1 / 2), _upsample(img, 1 / 4)
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat((img2x, enc2x), 1))
        hr4x = self.conv_enc4x(torch.cat((hr4x, self.tohr_enc4x(enc4x)), 1))
        hr4x = self.conv_hr4x(torch.cat((hr4x, _upsample(lr8x, 2), img4x), 1))
        return self.conv_hr2x(torch.cat((_upsample(hr4x, 2), enc2x), 1))


class FusionBranch(nn.Module):
    """Semantics and detail combined into the full-resolution matte."""

    def __init__(self, hr: int, enc: list[int]) -> None:
        super().__init__()
        self.conv_lr4x = Conv2dIBNormRelu(enc[2], hr, 5, padding=2)
        self.conv_f2x = Conv2dIBNormRelu(2 * hr, hr, 3, padding=1)
        self.conv_f = nn.Sequential(Conv2dIBNormRelu(hr + 3, hr // 2, 3, padding=1),
                                    Conv2dIBNormRelu(hr // 2, 1, 1, with_ibn=False, with_relu=False))

    def forward(self, img: torch.Tensor, lr8x: torch.Tensor, hr2x: torch.Tensor) -> torch.Tensor:
        lr2x = _upsample(self.conv_lr4x(_upsample(lr8x, 2)), 2)
        f2x = self.conv_f2x(torch.cat((lr2x, hr2x), 1))
        return torch.sigmoid(self.conv_f(torch.cat((_upsample(f2x, 2), img), 1)))


class MODNet(nn.Module):
    """Input: 1x3xHxW RGB in [-1, 1], H and W multiples of 32. Output: 1x1xHxW alpha."""

    def __init__(self, hr_channels: int = HR_CHANNELS) -> None:
        super().__init__()
        self.backbone = MobileNetV2Backbone(3)
        self.lr_branch = LRBranch(self.backbone)
        self.hr_branch = HRBranch(hr_channels, self.backbone.enc_channels)
        self.f_branch = FusionBranch(hr_channels, self.backbone.enc_channels)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        lr8x, enc2x, enc4x = self.lr_branch(img)
        hr2x = self.hr_branch(img, enc2x, enc4x, lr8x)
        return self.f_branch(img, lr8x, hr2x)
