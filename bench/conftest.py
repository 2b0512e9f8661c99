"""pytest-benchmark set-up for ``pytest bench/ --benchmark-only``.

The project's pytest ``addopts`` carry ``--benchmark-disable`` so the unit tests never time
anything; an explicit ``--benchmark-only`` on the command line means "run the benchmarks", so it
turns benchmarking back on (pytest-benchmark would otherwise refuse the two together).

Options: ``--bench-suite quick|full``, ``--bench-threads N`` (default 2), ``--bench-device``.
Cases and providers are the runner's (:mod:`bench.cases`, :mod:`bench.providers`).
"""

from __future__ import annotations

import pytest
import torch

import sgtriton  # noqa: F401  (selects Triton's interpreter before any kernel is decorated)
from bench.cases import SUITES, generator_cases, op_cases
from bench.providers import PROVIDERS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sgtriton-bench")
    group.addoption("--bench-suite", choices=SUITES, default="quick", help="benchmark case set [default: quick]")
    group.addoption("--bench-threads", type=int, default=2, help="torch.set_num_threads [default: 2]")
    group.addoption("--bench-device", default=None, help="cuda or cpu [default: cuda if available]")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


def bench_device(config: pytest.Config) -> torch.device:
    name = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``case`` (ops or generators, by the test module's ``CASES``) and ``provider``
    (the module's ``PROVIDERS``, default all)."""
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    device_type = bench_device(config).type
    suite = config.getoption("--bench-suite")
    table = {"ops": op_cases, "generator": generator_cases}[metafunc.module.CASES]
    cases = table(device_type, suite)
    metafunc.parametrize("case", cases, ids=[c.id.replace(" ", "_") for c in cases])
    metafunc.parametrize("provider", getattr(metafunc.module, "PROVIDERS", PROVIDERS))


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    dev = bench_device(pytestconfig)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda: no CUDA device is available")
    torch.set_num_threads(pytestconfig.getoption("--bench-threads"))
    return dev


class _WorkloadCache:
    """The last case's workload and reference output, shared by its providers' tests."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.workload = None
        self.reference = None

    def get(self, case, device: torch.device):
        if self.key != case.id:
            self.key, self.workload, self.reference = case.id, None, None
            torch._dynamo.reset()
            self.workload = case.build(device)
            with torch.no_grad():
                self.reference = self.workload.fn(*self.workload.args)
        return self.workload, self.reference


@pytest.fixture(scope="session")
def workloads() -> _WorkloadCache:
    return _WorkloadCache()


@pytest.fixture
def run_benchmark(benchmark, device: torch.device, workloads: _WorkloadCache):
    """Benchmark ``provider`` on ``case``: skip what cannot run here, check accuracy, then time."""
    from bench.providers import Unavailable, check_accuracy, make_call, unavailable_from_error
    from bench.timing import first_call_ms, synchronize

    def run(case, provider: str) -> None:
        reason = case.exclusion(provider)
        if reason:
            pytest.skip(reason)
        workload, reference = workloads.get(case, device)
        try:
            call = make_call(provider, workload, device)
        except Unavailable as exc:
            pytest.skip(str(exc))
        with torch.no_grad():
            try:
                cold_ms, out = first_call_ms(call, device)
            except Exception as exc:
                missing = unavailable_from_error(provider, exc)
                if missing is None:
                    raise
                pytest.skip(str(missing))
        accuracy = check_accuracy(out, reference, case.dtype)
        assert accuracy.ok, (f"{provider} disagrees with the reference on {case.id}: max abs error "
                             f"{accuracy.max_abs:.3e}, relative {accuracy.relative:.3e}")
        del out

        def timed() -> None:
            with torch.no_grad():
                call()
            synchronize(device)

        benchmark.group = case.id
        benchmark.name = provider
        info = {"provider": provider, "cold_ms": round(cold_ms, 3), "images_per_call": workload.images,
                "relative_error": accuracy.relative, "threads": torch.get_num_threads()}
        if workload.cost is not None:
            info.update(flops=workload.cost.flops, bytes=workload.cost.bytes)
        if provider in workload.launches:
            info["launches_per_call_planned"] = workload.launches[provider]
        benchmark.extra_info.update(info)
        benchmark(timed)
        if benchmark.enabled:
            benchmark.extra_info["per_image_ms"] = benchmark.stats.stats.median * 1e3 / workload.images
        torch._dynamo.reset()

    return run
