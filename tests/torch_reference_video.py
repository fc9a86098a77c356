"""Independent PyTorch (NCHW) reading of the official release's video model.

Written from the release's `inference_frame.py` (public repository Huage001/AdaAttN): its
`AttnAdaINCos` block, `Decoder`, `get_key`, the three-slice encoder and the per-frame loop of
`main`. It shares nothing with `flax_style`: the cosine attention below forms the full
(content x style) weight matrix exactly as the release does, so that the linear-time form of
the JAX code is held against the direct one. The VGG and the statistics helpers come from
`tests/torch_reference.py` (the same `vgg_normalised.pth` and `calc_mean_std` as the image
models). Module attribute names give the release's state-dict keys, so `save_official_video`
writes the two files of its `attn_adain_video/` folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tests import torch_reference as ref

COS_EPS = 1e-5  # both norms and the weight sum of AttnAdaINCos
MAX_SAMPLE = 256 * 256  # the release builds AttnAdaINCos(..., max_sample=256 * 256)
FRAME_HW = (256, 512)  # read_img(frame_path, 256, 512): frames are resized to 512x256 (w x h)
STYLE_HW = (512, 512)


def encode(vgg: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """[relu1_1, relu2_1, relu3_1]: the release runs only the first three slices."""
    feats = []
    for start, stop in ref.ENCODER_SLICES[:3]:
        x = vgg[start:stop](x)
        feats.append(x)
    return feats


def get_key(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """The release's `get_key`: every shallower map nearest-resized to the last one's size,
    each mean-variance normalised, concatenated shallowest first (64 + 128 + 256 = 448)."""
    h, w = feats[-1].shape[-2:]
    parts = [ref.mvn(F.interpolate(f, size=(h, w), mode="nearest")) for f in feats[:-1]]
    return torch.cat([*parts, ref.mvn(feats[-1])], dim=1)


class CosineAttention(nn.Module):
    """`AttnAdaINCos`: keys `f.*`, `g.*`, `h.*` (1x1 convs K->K, K->K, C->C)."""

    def __init__(self, in_planes: int, key_planes: int, max_sample: int = MAX_SAMPLE):
        super().__init__()
        self.f = nn.Conv2d(key_planes, key_planes, (1, 1))
        self.g = nn.Conv2d(key_planes, key_planes, (1, 1))
        self.h = nn.Conv2d(in_planes, in_planes, (1, 1))
        self.max_sample = max_sample

    def forward(self, content, style, content_key, style_key, sample_indices=None):
        """`sample_indices`: the style positions to keep (the release: randperm after seeding)."""
        b, _, h, w = content.shape
        query = self.f(content_key).flatten(2)  # (b, K, n_c)
        keys = self.g(style_key).flatten(2)  # (b, K, n_s)
        values = self.h(style).flatten(2)  # (b, C, n_s)
        if sample_indices is None and keys.shape[-1] > self.max_sample:
            sample_indices = torch.randperm(keys.shape[-1])[: self.max_sample]
        if sample_indices is not None:
            index = torch.as_tensor(sample_indices, dtype=torch.long)
            keys, values = keys[:, :, index], values[:, :, index]
        key_norm = keys.pow(2).sum(dim=1, keepdim=True).sqrt()  # (b, 1, n_s)
        query_norm = query.pow(2).sum(dim=1).sqrt().unsqueeze(-1)  # (b, n_c, 1)
        cosine = torch.bmm(query.transpose(1, 2), keys) / (query_norm + COS_EPS)
        weights = torch.relu(cosine / (key_norm + COS_EPS) + 1.0)  # (b, n_c, n_s)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + COS_EPS)
        values = values.transpose(1, 2)  # (b, n_s, C)
        mean = torch.bmm(weights, values)
        std = torch.sqrt(torch.relu(torch.bmm(weights, values * values) - mean * mean))
        mean = mean.transpose(1, 2).reshape(b, -1, h, w)
        std = std.transpose(1, 2).reshape(b, -1, h, w)
        return std * ref.mvn(content) + mean


def _pad_conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3))]


class VideoDecoder(nn.Module):
    """The release's `Decoder`: one `decoder` Sequential from relu3_1, two x2 upsamplings."""

    def __init__(self, widths: Sequence[int] = ref.VGG_WIDTHS):
        super().__init__()
        w1, w2, w3 = widths[:3]
        self.decoder = nn.Sequential(
            *_pad_conv(w3, w3), nn.ReLU(),  # 0-2
            *_pad_conv(w3, w3), nn.ReLU(),  # 3-5
            *_pad_conv(w3, w3), nn.ReLU(),  # 6-8
            *_pad_conv(w3, w2), nn.ReLU(),  # 9-11
            nn.Upsample(scale_factor=2, mode="nearest"),  # 12
            *_pad_conv(w2, w2), nn.ReLU(),  # 13-15
            *_pad_conv(w2, w1), nn.ReLU(),  # 16-18
            nn.Upsample(scale_factor=2, mode="nearest"),  # 19
            *_pad_conv(w1, w1), nn.ReLU(),  # 20-22
            *_pad_conv(w1, 3),  # 23-24: no output activation
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x)


class VideoModel(nn.Module):
    """`transformer` (saved as latest_net_transformer.pth) and `decoder` (latest_net_decoder)."""

    variant = "adaattn-video"

    def __init__(self, widths: Sequence[int] = ref.VGG_WIDTHS, max_sample: int = MAX_SAMPLE):
        super().__init__()
        self.transformer = CosineAttention(widths[2], sum(widths[:3]), max_sample)
        self.decoder = VideoDecoder(widths)

    def transform(self, c_feats, s_feats, sample_indices=None) -> torch.Tensor:
        return self.transformer(c_feats[2], s_feats[2], get_key(c_feats), get_key(s_feats),
                                sample_indices)  # fmt: skip

    def forward(self, c_feats, s_feats, output_size=None, sample_indices=None):
        """The image; `output_size`: the input size when it is not a multiple of 4 (the
        release only sees multiples of 16, where the decoder output already has that size)."""
        out = self.decoder(self.transform(c_feats, s_feats, sample_indices))
        if output_size is not None and tuple(out.shape[-2:]) != tuple(output_size):
            out = F.interpolate(out, size=tuple(output_size), mode="nearest")
        return out


def init_video_model_(model: VideoModel, seed: int = 0) -> VideoModel:
    """Informative random weights, as `torch_reference.init_model_`: `h` and the last conv
    variance-keeping, the others He-normal (cosines do not depend on the scale of f, g)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, nn.Conv2d):
                continue
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            last = name.endswith("decoder.24") or name.endswith(".h")
            m.weight.normal_(0.0, (1.0 if last else 2.0) ** 0.5 / fan_in**0.5, generator=gen)
            m.bias.normal_(0.0, 0.02, generator=gen)
    return model


def calibrate_output_(model: VideoModel, c_feats, s_feats, mean=0.5, std=0.15) -> VideoModel:
    """Rescales the last conv so that outputs lie mostly inside [0, 1] on these features."""
    with torch.no_grad():
        out = model(c_feats, s_feats)
        scale = std / out.std(dim=(0, 2, 3))
        last = model.decoder.decoder[24]
        last.weight.mul_(scale.view(-1, 1, 1, 1))
        last.bias.copy_((last.bias - out.mean(dim=(0, 2, 3))) * scale + mean)
    return model


def save_official_video(directory: str, model: VideoModel) -> list[str]:
    """Writes `latest_net_transformer.pth` and `latest_net_decoder.pth` as the release names
    them (keys `f.weight`, ..., `decoder.24.bias`); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, module in ((ref.TRANSFORMER_FILE, model.transformer),
                         (ref.DECODER_FILE, model.decoder)):  # fmt: skip
        path = os.path.join(directory, name)
        torch.save({k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, path)
        paths.append(path)
    return paths


def stylize_frames(vgg, model: VideoModel, frames, style, sample_indices=None):
    """The release's per-frame loop: each frame alone through encoder, block and decoder, the
    style re-keyed every frame; outputs clipped to [0, 1]. `frames`: iterable of (1, 3, h, w)."""
    s_feats = encode(vgg, style)
    with torch.no_grad():
        for frame in frames:
            out = model(encode(vgg, frame), s_feats, tuple(frame.shape[-2:]), sample_indices)
            yield out.clamp(0.0, 1.0)
