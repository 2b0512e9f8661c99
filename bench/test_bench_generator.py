"""Whole-generator benchmarks: presets x resolution x batch x dtype, one call = ``G(z)`` for a batch.

On a CPU the first case is the README example and its speed check: ``stylegan2-f`` at
256^2, batch 1, ``noise_mode='const'`` -- the ``reference`` provider is what ``sgtriton generate``
runs per image, and ``nvlabs`` the straightforward NVlabs-style PyTorch generator with the same
weights (:mod:`bench.nvlabs_style`), side by side in one benchmark group.
"""

CASES = "generator"


def test_generator(case, provider, run_benchmark):
    run_benchmark(case, provider)
