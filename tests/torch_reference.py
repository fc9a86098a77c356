"""Independent PyTorch (NCHW) reference of both models, written from docs/model.md only.

It is what the parity tests (and benchmarks) hold the JAX code against, so it deliberately
shares nothing with `flax_style`: every formula below is read off docs/model.md (section names in
the comments) and, where the spec is silent, off the official AdaAttN release. Module
attribute names give the official state-dict keys, so `save_official` / `save_vgg` write files
that the real converter (`flax_style.convert.load_official`) reads.

Features are lists `[relu1_1, ..., relu5_1]`; layer numbers `k` below are 1-based like the spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

VGG_WIDTHS = (64, 128, 256, 512, 512)
TINY_WIDTHS = (8, 16, 32, 64, 64)
EPS = 1e-5
LOSS_LAYERS = (2, 3, 4, 5)  # model.md "Training losses": relu2_1..relu5_1
DEFAULT_LOSS_WEIGHTS = {"content": 0.0, "global_style": 10.0, "local_style": 3.0}
# Slices of the VGG `nn.Sequential` ending at relu1_1..relu5_1 (model.md "Encoder").
ENCODER_SLICES = ((0, 4), (4, 11), (11, 18), (18, 31), (31, 44))


# -------------------------------------------------------------------------------- model.md: Encoder
def _pad_conv_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]


def _pool() -> nn.Module:
    return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)


def make_vgg(widths: Sequence[int] = VGG_WIDTHS) -> nn.Sequential:
    """The normalised VGG-19 as the official `nn.Sequential`: indices 0..52 (0..43 used)."""
    w1, w2, w3, w4, w5 = widths
    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]  # 0
    layers += _pad_conv_relu(3, w1)  # 1-3 relu1_1
    layers += _pad_conv_relu(w1, w1)  # 4-6
    layers += [_pool()]  # 7
    layers += _pad_conv_relu(w1, w2)  # 8-10 relu2_1
    layers += _pad_conv_relu(w2, w2)  # 11-13
    layers += [_pool()]  # 14
    layers += _pad_conv_relu(w2, w3)  # 15-17 relu3_1
    for _ in range(3):
        layers += _pad_conv_relu(w3, w3)  # 18-26
    layers += [_pool()]  # 27
    layers += _pad_conv_relu(w3, w4)  # 28-30 relu4_1
    for _ in range(3):
        layers += _pad_conv_relu(w4, w4)  # 31-39
    layers += [_pool()]  # 40
    layers += _pad_conv_relu(w4, w5)  # 41-43 relu5_1
    for _ in range(3):
        layers += _pad_conv_relu(w5, w5)  # 44-52: relu5_2..relu5_4 (keys 45, 48, 51), unused
    vgg = nn.Sequential(*layers)
    assert len(vgg) == 53
    return vgg


def encode(vgg: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """[relu1_1, ..., relu5_1] of an NCHW RGB batch in [0, 1] (slices enc_1..enc_5)."""
    feats = []
    for start, stop in ENCODER_SLICES:
        x = vgg[start:stop](x)
        feats.append(x)
    return feats


def vgg_widths(vgg: nn.Sequential) -> tuple[int, ...]:
    """Encoder widths relu1_1..relu5_1 read off the conv layers."""
    return tuple(vgg[i].out_channels for i in (2, 9, 16, 29, 42))


# ----------------------------------------------------------------------------- model.md: Statistics
def calc_mean_std(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and sqrt(unbiased var + eps), shaped (N, C, 1, 1)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    var = flat.var(dim=2, unbiased=True) + eps
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def mvn(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean-variance normalisation per sample and channel."""
    mean, std = calc_mean_std(x, eps)
    return (x - mean) / std


def resize_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """PyTorch nearest resize (src = floor(dst * in / out)); a no-op at the same size."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="nearest")


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _hw(x: torch.Tensor) -> tuple[int, int]:
    return int(x.shape[-2]), int(x.shape[-1])


# ------------------------------------------------------------------------- model.md: Attention keys
def get_key(feats: Sequence[torch.Tensor], k: int, mode: str) -> torch.Tensor:
    """Attention key of layer k (1-based) from [F^1..F^5]; mode shallow / single / pair."""
    target = feats[k - 1]
    if mode == "single":
        return mvn(target)
    if mode == "shallow":
        lower = range(1, k)
    elif mode == "pair":
        lower = [k - 1]
    else:
        raise ValueError(f"unknown key mode {mode!r}")
    parts = [mvn(resize_nearest(feats[j - 1], _hw(target))) for j in lower]
    return torch.cat([*parts, mvn(target)], dim=1)


def key_planes(widths: Sequence[int], k: int, mode: str) -> int:
    if mode == "single":
        return widths[k - 1]
    if mode == "pair":
        return widths[k - 2] + widths[k - 1]
    return sum(widths[:k])


# -------------------------------------------------------------------------- model.md: AdaAttN block
def attention_mean_std(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """query (b, n_c, K), key (b, K, n_s), value (b, n_s, C) -> mean, std (b, n_c, C)."""
    attn = torch.softmax(torch.bmm(query, key), dim=-1)  # no 1/sqrt(K)
    mean = torch.bmm(attn, value)
    std = torch.sqrt(torch.relu(torch.bmm(attn, value**2) - mean**2))
    return mean, std


def _select_style(
    key: torch.Tensor,
    value: torch.Tensor,
    max_sample: int,
    sample_indices: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened key (b, K, n_s) and value (b, n_s, C), restricted to a subset when needed."""
    b = key.shape[0]
    key = key.reshape(b, key.shape[1], -1)
    value = value.reshape(b, value.shape[1], -1)
    n_s = key.shape[-1]
    if sample_indices is None and n_s > max_sample:
        sample_indices = torch.randperm(n_s)[:max_sample]
    if sample_indices is not None:
        sample_indices = torch.as_tensor(sample_indices, dtype=torch.long)
        key, value = key[:, :, sample_indices], value[:, :, sample_indices]
    return key, value.transpose(1, 2)


def _adaptive_normalize(content: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """std * mvn(content) + mean with (b, n_c, C) statistics reshaped to content's NCHW."""
    b, c, h, w = content.shape
    mean = mean.reshape(b, h, w, c).permute(0, 3, 1, 2)
    std = std.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return std * mvn(content) + mean


class AdaAttN(nn.Module):
    """model.md "The AdaAttN block". State-dict keys `f.*`, `g.*`, `h.*` as the official block."""

    def __init__(self, in_planes: int, key_planes: int, max_sample: int = 256 * 256):
        super().__init__()
        self.f = nn.Conv2d(key_planes, key_planes, (1, 1))
        self.g = nn.Conv2d(key_planes, key_planes, (1, 1))
        self.h = nn.Conv2d(in_planes, in_planes, (1, 1))
        self.max_sample = max_sample

    def forward(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        content_key: torch.Tensor,
        style_key: torch.Tensor,
        sample_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`sample_indices`: explicit style positions to keep (else randperm when > max)."""
        query = self.f(content_key)
        b = query.shape[0]
        query = query.reshape(b, query.shape[1], -1).transpose(1, 2)
        key, value = _select_style(
            self.g(style_key), self.h(style), self.max_sample, sample_indices
        )
        mean, std = attention_mean_std(query, key, value)
        return _adaptive_normalize(content, mean, std)


# -------------------------------------------------------------------------------- model.md: Decoder
class Decoder(nn.Module):
    """Keys `decoder_layer_1.1.*`, `decoder_layer_2.{1,4,7,10,14,17,21,24}.*`."""

    def __init__(self, widths: Sequence[int] = VGG_WIDTHS, skip: bool = False):
        super().__init__()
        w1, w2, w3, w4, _ = widths
        self.skip = skip

        def pc(cin, cout):
            return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3))]

        self.decoder_layer_1 = nn.Sequential(
            *pc(w4, w3), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest")
        )
        self.decoder_layer_2 = nn.Sequential(
            *pc(w3 + w3 if skip else w3, w3), nn.ReLU(),  # 0-2
            *pc(w3, w3), nn.ReLU(),  # 3-5
            *pc(w3, w3), nn.ReLU(),  # 6-8
            *pc(w3, w2), nn.ReLU(),  # 9-11
            nn.Upsample(scale_factor=2, mode="nearest"),  # 12
            *pc(w2, w2), nn.ReLU(),  # 13-15
            *pc(w2, w1), nn.ReLU(),  # 16-18
            nn.Upsample(scale_factor=2, mode="nearest"),  # 19
            *pc(w1, w1), nn.ReLU(),  # 20-22
            *pc(w1, 3),  # 23-24, no output activation
        )  # fmt: skip

    def forward(
        self,
        x: torch.Tensor,
        skip_feature: torch.Tensor | None = None,
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        x = self.decoder_layer_1(x)
        if self.skip:
            # The resize rule: the skip feature follows layer_1's (upsampled) output size.
            x = torch.cat([x, resize_nearest(skip_feature, _hw(x))], dim=1)
        x = self.decoder_layer_2(x)
        if output_size is not None:
            x = resize_nearest(x, output_size)  # the resize rule: 8x relu4_1 -> input size
        return x


# -------------------------------------------------------------------------------- model.md: adaattn
class OfficialTransformer(nn.Module):
    """Keys `attn_adain_4_1.*`, `attn_adain_5_1.*`, `merge_conv.*`."""

    def __init__(self, widths: Sequence[int] = VGG_WIDTHS, max_sample: int = 256 * 256):
        super().__init__()
        self.attn_adain_4_1 = AdaAttN(widths[3], key_planes(widths, 4, "shallow"), max_sample)
        self.attn_adain_5_1 = AdaAttN(widths[4], key_planes(widths, 5, "shallow"), max_sample)
        self.merge_conv_pad = nn.ReflectionPad2d((1, 1, 1, 1))
        self.merge_conv = nn.Conv2d(widths[3], widths[3], (3, 3))

    def forward(self, c_feats, s_feats, sample_indices: Mapping[int, torch.Tensor] | None = None):
        idx = sample_indices or {}
        out4 = self.attn_adain_4_1(
            c_feats[3], s_feats[3], get_key(c_feats, 4, "shallow"),
            get_key(s_feats, 4, "shallow"), idx.get(4),
        )  # fmt: skip
        out5 = self.attn_adain_5_1(
            c_feats[4], s_feats[4], get_key(c_feats, 5, "shallow"),
            get_key(s_feats, 5, "shallow"), idx.get(5),
        )  # fmt: skip
        merged = out4 + resize_nearest(upsample2(out5), _hw(out4))  # the resize rule
        return self.merge_conv(self.merge_conv_pad(merged))


class AdaAttNModel(nn.Module):
    """The official model: `adaattn_3`, `transformer`, skip `decoder` (model.md, adaattn)."""

    variant = "adaattn"

    def __init__(
        self,
        widths: Sequence[int] = VGG_WIDTHS,
        max_sample_3: int = 64 * 64,
        max_sample_45: int = 256 * 256,
    ):
        super().__init__()
        self.widths = tuple(widths)
        self.adaattn_3 = AdaAttN(widths[2], key_planes(widths, 3, "shallow"), max_sample_3)
        self.transformer = OfficialTransformer(widths, max_sample_45)
        self.decoder = Decoder(widths, skip=True)

    def transform(self, c_feats, s_feats, sample_indices=None) -> dict[str, torch.Tensor]:
        idx = sample_indices or {}
        skip = self.adaattn_3(
            c_feats[2], s_feats[2], get_key(c_feats, 3, "shallow"),
            get_key(s_feats, 3, "shallow"), idx.get(3),
        )  # fmt: skip
        return {"transformer": self.transformer(c_feats, s_feats, idx), "adaattn_3": skip}

    def forward(self, c_feats, s_feats, output_size=None, sample_indices=None):
        t = self.transform(c_feats, s_feats, sample_indices)
        return self.decoder(t["transformer"], t["adaattn_3"], output_size)


# ------------------------------------------------------------------------------- model.md: proposed
class ProposedTransformer(nn.Module):
    """Keys `attn_adain_3_1.*`, `attn_adain_2_3_1.*`, `attn_adain_4_1.*`, `attn_adain_5_1.*`,
    `merge_conv.*` (model.md "Variant proposed")."""

    def __init__(
        self,
        widths: Sequence[int] = VGG_WIDTHS,
        fusion_weights: Sequence[float] = (0.1, 0.3, 0.6),
        max_sample_3: int = 64 * 64,
        max_sample_45: int = 256 * 256,
    ):
        super().__init__()
        self.fusion_weights = tuple(float(w) for w in fusion_weights)
        self.attn_adain_3_1 = AdaAttN(widths[2], key_planes(widths, 3, "single"), max_sample_3)
        self.attn_adain_2_3_1 = AdaAttN(widths[2], key_planes(widths, 3, "pair"), max_sample_3)
        self.attn_adain_4_1 = AdaAttN(widths[3], key_planes(widths, 4, "single"), max_sample_45)
        self.attn_adain_5_1 = AdaAttN(widths[4], key_planes(widths, 5, "single"), max_sample_45)
        self.merge_conv_pad = nn.ReflectionPad2d((1, 1, 1, 1))
        self.merge_conv = nn.Conv2d(widths[3], widths[3], (3, 3))

    def branches(self, c_feats, s_feats, sample_indices=None) -> dict[str, torch.Tensor]:
        """F_cs^3 (concat single, pair), F_cs^4, F_cs^5 at their own resolutions."""
        idx = sample_indices or {}

        def block(module, k, mode):
            return module(
                c_feats[k - 1], s_feats[k - 1], get_key(c_feats, k, mode),
                get_key(s_feats, k, mode), idx.get(k),
            )  # fmt: skip

        f3 = torch.cat(
            [block(self.attn_adain_3_1, 3, "single"), block(self.attn_adain_2_3_1, 3, "pair")],
            dim=1,
        )
        return {
            "cs3": f3,
            "cs4": block(self.attn_adain_4_1, 4, "single"),
            "cs5": block(self.attn_adain_5_1, 5, "single"),
        }

    def forward(self, c_feats, s_feats, sample_indices=None) -> torch.Tensor:
        b = self.branches(c_feats, s_feats, sample_indices)
        w3, w4, w5 = self.fusion_weights
        size4 = _hw(b["cs4"])
        fused = (
            w3 * resize_nearest(b["cs3"], size4)
            + w4 * b["cs4"]
            + w5 * resize_nearest(b["cs5"], size4)
        )
        return self.merge_conv(self.merge_conv_pad(fused))


class ProposedModel(nn.Module):
    """The paper's model: `transformer` (fusion) and the no-skip `decoder` (model.md, proposed)."""

    variant = "proposed"

    def __init__(
        self,
        widths: Sequence[int] = VGG_WIDTHS,
        fusion_weights: Sequence[float] = (0.1, 0.3, 0.6),
        max_sample_3: int = 64 * 64,
        max_sample_45: int = 256 * 256,
    ):
        super().__init__()
        self.widths = tuple(widths)
        self.transformer = ProposedTransformer(widths, fusion_weights, max_sample_3, max_sample_45)
        self.decoder = Decoder(widths, skip=False)

    def transform(self, c_feats, s_feats, sample_indices=None) -> dict[str, torch.Tensor]:
        return {"transformer": self.transformer(c_feats, s_feats, sample_indices)}

    def forward(self, c_feats, s_feats, output_size=None, sample_indices=None):
        return self.decoder(self.transformer(c_feats, s_feats, sample_indices), None, output_size)


def make_model(variant: str, widths: Sequence[int] = VGG_WIDTHS, **kwargs) -> nn.Module:
    if variant == "adaattn":
        return AdaAttNModel(widths, **kwargs)
    if variant == "proposed":
        return ProposedModel(widths, **kwargs)
    raise ValueError(f"unknown variant {variant!r}")


def stylize(vgg: nn.Sequential, model: nn.Module, content: torch.Tensor, style: torch.Tensor):
    """Inference: encode both images, run the model at the content size, clip to [0, 1]."""
    out = model(encode(vgg, content), encode(vgg, style), output_size=_hw(content))
    return out.clamp(0.0, 1.0)


# ------------------------------------------------------------------------ model.md: Training losses
def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b)


def content_loss(stylized, content) -> torch.Tensor:
    return sum(mse(mvn(stylized[k - 1]), mvn(content[k - 1])) for k in LOSS_LAYERS)


def global_style_loss(stylized, style) -> torch.Tensor:
    total = 0.0
    for k in LOSS_LAYERS:
        cs_mean, cs_std = calc_mean_std(stylized[k - 1])
        s_mean, s_std = calc_mean_std(style[k - 1])
        total = total + mse(cs_mean, s_mean) + mse(cs_std, s_std)
    return total


def local_style_loss(
    stylized,
    content,
    style,
    key_mode: str = "shallow",
    max_sample: int = 64 * 64,
    sample_indices: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`sample_indices`: {k: kept style positions} for layers with more than `max_sample`."""
    idx = sample_indices or {}
    total = 0.0
    for k in LOSS_LAYERS:
        c_key = get_key(content, k, key_mode)
        s_key = get_key(style, k, key_mode)
        key, value = _select_style(s_key, style[k - 1], max_sample, idx.get(k))
        b = c_key.shape[0]
        query = c_key.reshape(b, c_key.shape[1], -1).transpose(1, 2)
        mean, std = attention_mean_std(query, key, value)
        target = _adaptive_normalize(content[k - 1], mean, std)
        total = total + mse(stylized[k - 1], target)
    return total


def total_loss(
    stylized,
    content,
    style,
    weights: Mapping[str, float] = DEFAULT_LOSS_WEIGHTS,
    key_mode: str = "shallow",
    max_sample: int = 64 * 64,
    sample_indices=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted total, {"content", "global_style", "local_style", "total"})."""
    terms = {
        "content": content_loss(stylized, content),
        "global_style": global_style_loss(stylized, style),
        "local_style": local_style_loss(
            stylized, content, style, key_mode, max_sample, sample_indices
        ),
    }
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {**terms, "total": total}


# ----------------------------------------------------------------------------- files
ADAATTN_3_FILE = "latest_net_adaattn_3.pth"
TRANSFORMER_FILE = "latest_net_transformer.pth"
DECODER_FILE = "latest_net_decoder.pth"
VGG_FILE = "vgg_normalised.pth"


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_official(directory: str, variant: str, model: nn.Module) -> list[str]:
    """Writes the official `latest_net_*.pth` state dicts of `model`; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    files = {TRANSFORMER_FILE: model.transformer, DECODER_FILE: model.decoder}
    if variant == "adaattn":
        files[ADAATTN_3_FILE] = model.adaattn_3
    paths = []
    for name, module in files.items():
        path = os.path.join(directory, name)
        torch.save(_cpu_state(module), path)
        paths.append(path)
    return paths


def save_vgg(path: str, vgg: nn.Sequential) -> str:
    """Writes the encoder as `vgg_normalised.pth` (keys `{index}.weight` / `.bias`, 0..51)."""
    if os.path.isdir(path):
        path = os.path.join(path, VGG_FILE)
    torch.save(_cpu_state(vgg), path)
    return path


def grads_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The `.grad` of every parameter under the state-dict key of that parameter."""
    return {
        k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for k, p in module.named_parameters()
    }


# ----------------------------------------------------------------------------- init
def init_vgg_(vgg: nn.Sequential, seed: int = 0) -> nn.Sequential:
    """He-normal convs and small biases: features stay O(1) and few channels die."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in vgg.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                m.bias.normal_(0.0, 0.05, generator=gen)
    return vgg


def init_model_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep every output informative.

    `f`/`g` get std sqrt(2 / K^1.5): attention logits have std ~2, so the softmax is neither
    uniform nor one-hot. `h`, `merge_conv` and the last decoder conv keep the variance
    (std sqrt(1 / fan_in)); the ReLU convs of the decoder are He-normal. Biases are small but
    non-zero so that their conversion is tested too.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, nn.Conv2d):
                continue
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("f", "g"):
                std = (2.0 / m.in_channels**1.5) ** 0.5
            elif leaf == "h" or leaf == "merge_conv" or name.endswith("decoder_layer_2.24"):
                std = (1.0 / fan_in) ** 0.5
            else:
                std = (2.0 / fan_in) ** 0.5
            m.weight.normal_(0.0, std, generator=gen)
            m.bias.normal_(0.0, 0.02, generator=gen)
    return model


def calibrate_output_(
    model: nn.Module, c_feats, s_feats, mean: float = 0.5, std: float = 0.15
) -> nn.Module:
    """Rescales the last decoder conv so that the output has per-channel `mean` and `std` on
    these features: images then lie mostly inside [0, 1] (clipping would hide differences)."""
    with torch.no_grad():
        out = model(c_feats, s_feats)
        out_mean = out.mean(dim=(0, 2, 3))
        out_std = out.std(dim=(0, 2, 3))
        scale = std / out_std
        last = model.decoder.decoder_layer_2[24]
        last.weight.mul_(scale.view(-1, 1, 1, 1))
        last.bias.copy_((last.bias - out_mean) * scale + mean)
    return model


def smooth_images(
    batch: int, height: int, width: int, seed: int = 0, cells: int = 6
) -> torch.Tensor:
    """Image-like NCHW test images in [0, 1]: bilinear low-frequency noise plus fine noise."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, cells, cells, generator=gen)
    img = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.randn(batch, 3, height, width, generator=gen)
    return img.clamp(0.0, 1.0)


def to_nhwc(x: torch.Tensor):
    """NCHW torch tensor -> NHWC numpy float32 array."""
    return x.detach().permute(0, 2, 3, 1).contiguous().numpy()
