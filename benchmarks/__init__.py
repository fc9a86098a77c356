"""Benchmarks of flax-style against the PyTorch reference (`tests/torch_reference.py`).

Run from the repository root, e.g. `python -m benchmarks.bench`. They use the package's public
names only and live outside it: an installed `flax_style` needs neither them nor `tests/`.
"""
