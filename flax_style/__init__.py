"""flax-style: AdaAttN and the paper's weighted-fusion model for arbitrary style transfer."""

import importlib.metadata
import os

# XLA:CPU hands convolutions and reductions (max-pool) to YNNPACK by default (jaxlib 0.10); on
# this model's 3x3 convs that runs at ~90 GFLOP/s on a 2-core AVX-512 Xeon against ~300 for
# XLA's own convolution, and the VGG encoder takes 2x longer, while YNNPACK's element-wise
# fusions (the softmax) stay faster. Measured in README "Performance".
# A CPU-only option, inert on GPUs; set only for jaxlib releases known to have it (an unknown
# XLA flag is fatal), and only if the user has not chosen a value. It must be in XLA_FLAGS
# before JAX starts its CPU backend, i.e. before the first computation.
_CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce"


def _jaxlib_has_cpu_flag() -> bool:
    try:
        return importlib.metadata.version("jaxlib").startswith("0.10.")
    except importlib.metadata.PackageNotFoundError:
        return False


if _jaxlib_has_cpu_flag() and "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CPU_XLA_FLAG}".strip()
