"""Conversion of official PyTorch AdaAttN weights into a flax-style checkpoint.

    python -m flax_style.convert --model {adaattn,proposed,adaattn-video} --torch_dir DIR \
        --vgg PATH/vgg_normalised.pth --out CKPT_DIR

`DIR` holds the official file names (docs/model.md, "Official files and keys"):
`latest_net_adaattn_3.pth` (adaattn only), `latest_net_transformer.pth`,
`latest_net_decoder.pth`; for adaattn-video the release's `attn_adain_video/` folder
(transformer keys `f.*`, `g.*`, `h.*`, decoder keys `decoder.*`). The output checkpoint holds
the encoder (the whole VGG, whatever the variant reads of it, so the evaluation losses work on
every checkpoint), every trained parameter and the model config, so inference needs nothing
else.
"""

import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import flags
from flax import traverse_util

from flax_style import checkpoint, cli, errors, models

VGG_FILE = "vgg_normalised.pth"
ADAATTN_3_FILE = "latest_net_adaattn_3.pth"
TRANSFORMER_FILE = "latest_net_transformer.pth"
DECODER_FILE = "latest_net_decoder.pth"
_VGG_INDEX = dict(models.VGG_CONVS)
_LAST_USED_VGG_INDEX = 43  # relu5_1; the official file also holds relu5_2..relu5_4


class ConversionError(errors.UserError):
    """Unusable input weights; the message names the file, the key and the shapes."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (`.pth`) as float32 numpy arrays."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        import torch
    except ImportError as error:
        raise ConversionError(
            f"{path}: reading .pth files needs PyTorch: pip install 'flax-style[torch]'"
        ) from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise ConversionError(
            f"{path}: not a readable PyTorch state dict ({type(error).__name__}: the file is "
            "corrupt, truncated or not a torch.save'd state dict); re-download it"
        ) from error
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors, found {type(state)}")
    return {key: value.detach().float().numpy() for key, value in state.items()}


def _to_flax(name: str, value: np.ndarray) -> np.ndarray:
    # PyTorch conv weights are OIHW; flax kernels are HWIO.
    return value.transpose(2, 3, 1, 0) if name == "kernel" else value


def _torch_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[3], shape[2], shape[0], shape[1]) if name == "kernel" else tuple(shape)


def _take(
    state: Mapping[str, np.ndarray], file: str, expected: Mapping[str, tuple[str, tuple]]
) -> dict[str, np.ndarray]:
    """Looks up each torch key of `expected` ({torch_key: (flax leaf name, flax shape)})."""
    out = {}
    for key, (leaf, shape) in expected.items():
        torch_shape = _torch_shape(leaf, shape)
        if key not in state:
            raise ConversionError(f"{file}: missing key {key!r} (expected shape {torch_shape})")
        if tuple(state[key].shape) != torch_shape:
            raise ConversionError(
                f"{file}: key {key!r} has shape {tuple(state[key].shape)}, expected {torch_shape}"
            )
        out[key] = _to_flax(leaf, state[key])
    return out


def vgg_from_state_dict(state: Mapping[str, np.ndarray], file: str = VGG_FILE) -> tuple[Any, list]:
    """Encoder parameters and widths (relu1_1..relu5_1 channels) from a VGG state dict."""
    try:
        widths = [int(state[f"{_VGG_INDEX[f'conv{k}_1']}.weight"].shape[0]) for k in range(1, 6)]
    except KeyError as error:
        raise ConversionError(
            f"{file}: missing key {error.args[0]!r}; is it vgg_normalised?"
        ) from None
    _, abstract = models.abstract_params(models.model_config({"widths": widths}))
    expected = {
        f"{_VGG_INDEX[conv]}.{'weight' if leaf == 'kernel' else 'bias'}": (leaf, value.shape)
        for (conv, leaf), value in traverse_util.flatten_dict(abstract).items()
    }
    used = {k for k in state if int(k.split(".")[0]) <= _LAST_USED_VGG_INDEX}
    extra = sorted(used - set(expected))
    if extra:
        raise ConversionError(
            f"{file}: unexpected key {extra[0]!r} (shape {state[extra[0]].shape})"
        )
    values = _take(state, file, expected)
    flat = {
        (conv, leaf): values[f"{_VGG_INDEX[conv]}.{'weight' if leaf == 'kernel' else 'bias'}"]
        for (conv, leaf) in traverse_util.flatten_dict(abstract)
    }
    return traverse_util.unflatten_dict(flat), widths


def load_vgg(path: str) -> tuple[Any, list]:
    """Encoder parameters and widths from an official `vgg_normalised.pth`."""
    return vgg_from_state_dict(read_state_dict(path), path)


def torch_location(path: tuple[str, ...], variant: str | None = None) -> tuple[str, str]:
    """(official file, state-dict key) of a flax parameter path of a network.

    Args:
      path: flax parameter path, e.g. ("decoder", "layer_2_24", "kernel").
      variant: the model variant; the image models share one layout, the video model has its
        own (the transformer file is its one block, the decoder a plain `decoder` Sequential).
    """
    *modules, leaf = path
    leaf = "weight" if leaf == "kernel" else "bias"
    top = modules[0]
    video = variant == models.VIDEO
    if top == "adaattn_3":
        return ADAATTN_3_FILE, ".".join([*modules[1:], leaf])
    if top == "decoder":  # flax "layer_2_24" <-> torch "decoder_layer_2.24" (video "decoder.24")
        block, index = modules[1].rsplit("_", 1)
        return DECODER_FILE, f"{'decoder' if video else f'decoder_{block}'}.{index}.{leaf}"
    if video:  # flax ("transformer", "f") <-> torch "f"
        modules = modules[1:]
    return TRANSFORMER_FILE, ".".join([*modules, leaf])


def network_from_state_dicts(
    state_dicts: Mapping[str, Mapping[str, np.ndarray]],
    model_config: Mapping[str, Any],
    torch_dir: str = "",
) -> Any:
    """Trainable parameters from the official state dicts, keyed by file name.

    Args:
      state_dicts: {official file name: state dict}.
      model_config: the model config the parameters must fit.
      torch_dir: where the files came from, for error messages.

    Raises:
      ConversionError: a missing, extra or misshaped key (naming file, key and shapes).
    """
    flat = traverse_util.flatten_dict(models.abstract_params(model_config)[0])
    by_file: dict[str, dict[str, tuple[str, tuple]]] = {}
    variant = model_config["variant"]
    for path, value in flat.items():
        file, key = torch_location(path, variant)
        by_file.setdefault(file, {})[key] = (path[-1], value.shape)
    params = {}
    for file, expected in by_file.items():
        state = state_dicts[file]
        extra = sorted(set(state) - set(expected))
        file = os.path.join(torch_dir, file)
        if extra:
            raise ConversionError(
                f"{file}: unexpected key {extra[0]!r} (shape {tuple(state[extra[0]].shape)}); "
                f"is this a {variant!r} checkpoint?"
            )
        values = _take(state, file, expected)
        for path in flat:
            path_file, key = torch_location(path, variant)
            if os.path.join(torch_dir, path_file) == file:
                params[path] = values[key]
    return traverse_util.unflatten_dict(params)


def official_variant(transformer_state: Mapping[str, Any]) -> str:
    """Which variant a `latest_net_transformer.pth` state dict belongs to, from its keys.

    Said in one line rather than as a list of key errors: the paper's layout is the one with a
    pair-key block, the video model's the one whose keys are a bare block (`f.weight`).
    """
    if "attn_adain_2_3_1.f.weight" in transformer_state:
        return "proposed"
    if "f.weight" in transformer_state:
        return models.VIDEO
    return "adaattn"


def load_official(
    variant: str,
    torch_dir: str,
    vgg_path: str,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Reads official-layout PyTorch weights.

    Args:
      variant: "adaattn", "proposed" or "adaattn-video".
      torch_dir: directory with the `latest_net_*.pth` files.
      vgg_path: path of `vgg_normalised.pth`.
      overrides: further model config fields (e.g. fusion weights).

    Returns:
      (params, encoder_params, model_config) ready for `checkpoint.save_model`.
    """
    encoder_params, widths = load_vgg(vgg_path)
    config = models.model_config({**(overrides or {}), "variant": variant, "widths": widths})
    transformer_path = os.path.join(torch_dir, TRANSFORMER_FILE)
    state_dicts = {TRANSFORMER_FILE: read_state_dict(transformer_path)}
    found = official_variant(state_dicts[TRANSFORMER_FILE])
    if found != variant:
        raise ConversionError(
            f"{transformer_path}: holds {found!r} weights, not {variant!r}; pass --model {found}"
        )
    files = [DECODER_FILE] + ([ADAATTN_3_FILE] if variant == "adaattn" else [])
    state_dicts.update({file: read_state_dict(os.path.join(torch_dir, file)) for file in files})
    params = network_from_state_dicts(state_dicts, config, torch_dir)
    return params, encoder_params, config


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_enum("model", None, models.VARIANTS, "Model variant of the files.", **define)
    flags.DEFINE_string("torch_dir", None, "Directory of the latest_net_*.pth files.", **define)
    flags.DEFINE_string("vgg", None, "Path of vgg_normalised.pth.", **define)
    flags.DEFINE_string("out", None, "Checkpoint directory to write.", **define)
    flags.DEFINE_list(
        "fusion_weights",
        None,
        "Proposed model's fusion weights W3,W4,W5 (default: the model config's).",
        **define,
    )
    flags.mark_flags_as_required(["model", "torch_dir", "vgg", "out"], flag_values=values)
    return values


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, "python -m flax_style.convert", __doc__.split("\n\n")[0])
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise cli.UsageError(
            f"{args.out}: already exists and is not empty; remove it or pick another --out"
        )
    overrides = None
    if args.fusion_weights is not None:
        try:
            overrides = {"fusion_weights": [float(w) for w in args.fusion_weights]}
        except ValueError:
            overrides = {}
        if len(overrides.get("fusion_weights", ())) != 3:
            raise cli.UsageError(
                f"--fusion_weights {','.join(args.fusion_weights)}: expected three numbers, "
                "e.g. 0.1,0.3,0.6"
            )
        try:
            models.model_config(overrides)
        except ValueError as error:
            raise cli.UsageError(f"--fusion_weights: {error}") from None
    cli.check_writable_dir(args.out, "out")
    params, encoder_params, config = load_official(args.model, args.torch_dir, args.vgg, overrides)
    out = checkpoint.save_model(args.out, params, encoder_params, config)
    count = sum(np.size(p) for p in jax.tree.leaves(params))
    print(f"wrote {args.model} checkpoint ({count:,} trainable parameters) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
