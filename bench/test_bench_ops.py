"""Per-op benchmarks: modulated conv (up / no up), ToRGB + skip, upfirdn2d, bias_act, AdaIN, mapping.

Cases and sizes come from :func:`bench.cases.op_cases`; providers from :mod:`bench.providers`.
Run with ``pytest bench/ --benchmark-only`` (see ``bench/README.md``).
"""

CASES = "ops"
PROVIDERS = ("reference", "compile", "triton")


def test_op(case, provider, run_benchmark):
    run_benchmark(case, provider)
