"""SSVIF's two segmentation branches: head H on fused features, SegFormer S on the fused image."""
from __future__ import annotations

import torch
from torch import nn

# SegFormer MiT presets (Xie et al. 2021, table 6); heads and reduction ratios are shared.
SEGFORMER_PRESETS = {
    'b0': dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    'b1': dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    'b2': dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
    'b3': dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=768),
    'b4': dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], decoder_hidden_size=768),
    'b5': dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),
    # Not a paper preset: a CPU-sized SegFormer (0.5 M parameters) for the 2-core default-model
    # recipe, where B0 (3.7 M) took about 10x the time of F + H per training step.
    'tiny': dict(hidden_sizes=[16, 32, 80, 128], depths=[1, 1, 1, 1], decoder_hidden_size=64),
}


HEAD_PADDING = ('zeros', 'replicate')


class SegHead(nn.Module):
    """H: two 3x3 conv (+BN, ReLU) and a 1x1 conv to ``num_classes`` logits (paper III-C).

    ``padding_mode='replicate'`` keeps the image border from looking like an edge to the convs
    (zero padding let a constant image produce a different class along the border).
    """

    def __init__(self, in_channels: int, num_classes: int = 15, hidden: int = 64,
                 padding_mode: str = 'zeros'):
        super().__init__()
        if padding_mode not in HEAD_PADDING:
            raise ValueError(f'SegHead padding_mode must be one of {HEAD_PADDING}, got '
                             f'{padding_mode!r}')
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, hidden
        self.padding_mode = padding_mode
        pm = padding_mode
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False, padding_mode=pm),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False, padding_mode=pm),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """N x C x h x w features -> N x n x h x w logits."""
        return self.net(feats)


class SegFormerSeg(nn.Module):
    """S: SegFormer from ``transformers.SegformerConfig`` with random init (never a hub download).

    Input: fused RGB N x 3 x H x W in [0, 1] (normalized inside with ImageNet statistics, as the
    SegFormer reference does); output: logits N x n x H/4 x W/4.
    """

    def __init__(self, preset: str = 'b3', num_classes: int = 15):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
        preset = preset.lower()
        if preset not in SEGFORMER_PRESETS:
            raise ValueError(f'unknown SegFormer preset {preset!r}; '
                             f'choose one of {sorted(SEGFORMER_PRESETS)}')
        self.preset, self.num_classes = preset, num_classes
        cfg = SegformerConfig(num_labels=num_classes, num_channels=3,
                              **SEGFORMER_PRESETS[preset])
        self.net = SegformerForSemanticSegmentation(cfg)
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W image in [0, 1] -> N x n x H/4 x W/4 logits."""
        return self.net(pixel_values=(img - self.mean) / self.std).logits
