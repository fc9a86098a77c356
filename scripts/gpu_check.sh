#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine (issue 5): parity of both models on the
# GPU, the benchmark in float32 and bfloat16, then the exported artifact run on CUDA
# (benchmarks/serve.py). Run from the repository root:
#
#   bash scripts/gpu_check.sh 2>&1 | tee gpu_check.log
#
# Needs jax with CUDA, flax, optax, orbax-checkpoint, torch (any CUDA build), pytest, chex and
# this package's pure-Python dependencies (ml-collections, grain, pillow, scikit-image,
# tensorboardX); where they cannot be installed, put their wheels in .whl/ and they are used.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
status=0

echo "== parity on the GPU (JAX on the GPU, full-precision matmuls; PyTorch reference on CPU)"
JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest \
  python3 -m pytest -q -p no:cacheprovider tests/test_parity.py tests/test_mixed_precision.py \
  -k "not float64" || status=1

echo "== benchmark, float32 (TF32 matmuls: the JAX and PyTorch defaults)"
python3 -m benchmarks.bench --dtype=float32 --sizes=512,1024,2048,4096 || status=1
echo "== benchmark, bfloat16 (ours; PyTorch stays float32)"
python3 -m benchmarks.bench --dtype=bfloat16 --sizes=512,1024,2048,4096 --notrain_torch \
  --notorch || status=1
echo "== the exported artifact (CPU + CUDA lowerings in one file) on the GPU against the library"
python3 -m benchmarks.serve --size=512 || status=1
exit $status
