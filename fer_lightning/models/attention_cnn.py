"""Paper 004's multi-scale CNN with dynamic attention and residual blocks (Table 3, §3):

- two parallel streams, 3×3 and 5×5 kernels, each conv 32 → conv 64 (BN, ReLU, 2×2 max-pool
  after each), concatenated → 128 channels;
- dynamic attention: global average pooling → dense (tanh) → softmax over channels → channel
  weights (× channels, so that uniform attention is the identity) multiplying the features;
- two residual blocks (conv-BN-ReLU-conv-BN + skip, stride 2, 1×1 projection on the skip), the
  skip also weighted by the attention (the paper's "dynamically modulated skip connections");
- flatten → dense 256 → BN → dropout 0.5 → dense 128 → BN → dropout 0.5 → 7.

Input: grey faces resized on the device to ``input_size`` (the paper's 128×128). The paper's
table says the attention dense layer has "one neuron"; a softmax over one neuron is constant,
so we read the text ("channel probability distributions"): one neuron per channel.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.models.cnn import fc_stack


def _conv_bn_relu(cin, cout, k, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ChannelAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Linear(channels, channels)

    def forward(self, x):
        w = torch.tanh(self.score(x.mean((2, 3)))).softmax(1) * x.shape[1]
        return w[:, :, None, None]


class AttentiveResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin, cout, 3, stride=2),
                                  nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.attention = ChannelAttention(cout)

    def forward(self, x):
        out = self.body(x)
        return F.relu(out + self.skip(x) * self.attention(out))


class MultiScaleAttentionCNN(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 1, input_size: int = 128,
                 stream_widths: tuple[int, int] = (32, 64), res_widths: tuple[int, int] = (128, 256),
                 fc: tuple[int, int] = (256, 128), dropout: float = 0.5):
        super().__init__()
        a, b = stream_widths
        self.stream3 = nn.Sequential(_conv_bn_relu(in_channels, a, 3), nn.MaxPool2d(2),
                                     _conv_bn_relu(a, b, 3), nn.MaxPool2d(2))
        self.stream5 = nn.Sequential(_conv_bn_relu(in_channels, a, 5), nn.MaxPool2d(2),
                                     _conv_bn_relu(a, b, 5), nn.MaxPool2d(2))
        self.attention = ChannelAttention(2 * b)
        blocks, c = [], 2 * b
        for w in res_widths:
            blocks.append(AttentiveResidualBlock(c, w))
            c = w
        self.residual = nn.Sequential(*blocks)
        side = input_size // 4 // 2 ** len(res_widths)
        if side < 1:
            raise ValueError(f"MultiScaleAttentionCNN: input_size {input_size} is too small")
        layers, f = fc_stack(c * side * side, fc, dropout, bn=True)
        self.head = nn.Sequential(nn.Flatten(), *layers)
        self.feature_dim = f
        self.classifier = nn.Linear(f, num_classes)
        self.input_size = input_size
        self.init_args = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                              stream_widths=list(stream_widths), res_widths=list(res_widths), fc=list(fc),
                              dropout=dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = torch.cat([self.stream3(x), self.stream5(x)], dim=1)
        x = x * self.attention(x)
        return self.head(self.residual(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
