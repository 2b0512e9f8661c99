"""Ahead-of-time compile gate: every declared kernel x launch variant x config x dtype x target,
compiled without a GPU exactly as a launch would compile it.

Triton's interpreter forgives what the GPU compiler does not (layouts, register pressure, shared
memory, unsupported ops), so every kernel in :data:`~sgtriton.ops._runtime.KERNELS` is also
compiled here with ``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget(
"cuda", cap, 32))`` for each target (sm_80 and sm_90 by default), each of its declared configs and
dtypes, and each *launch variant*: the kernel's declared example launches (one per flag
combination the blocks launch, at real layer shapes) are run through the launcher with the kernel
replaced by a recorder, and the recorded arguments are specialised as the JIT specialises them
(:mod:`sgtriton.inspection.launches`: alignment and divisibility hints, integers equal to 1 folded).
So the gate compiles what runs, not a hand-typed signature. Per compile it records:

* ``registers`` and ``static_shared_bytes`` -- ``cuobjdump --dump-resource-usage`` of the cubin;
* ``spill_stores`` / ``spill_loads`` (bytes) -- the ``ptxas -v`` log Triton prints on request;
* ``shared_bytes`` -- ``metadata.shared``, the dynamic shared memory Triton launches with;
* ``mma_ops`` -- tensor-core instructions (``HMMA``, ``HGMMA``, ...) found in ``cuobjdump -sass``;
* ``compile_seconds`` and the compile ``error`` (captured, never raised).

A result *fails* (:meth:`CompileResult.problems`) on a compile error, on any spill, on shared
memory or registers beyond what the target can launch, on a half-precision (fp16/bf16) compile of
a kernel declared ``uses_tensor_cores=True`` that has no tensor-core instruction, and, on sm_90,
on a *default* config of such a kernel whose fp16/fp32 dots fall back from wgmma (``HGMMA``) to the
older ``HMMA`` (Triton does so for tiles of ``BLOCK_M < 64`` per warpgroup, e.g. ``BLOCK_M = 32``
or 2 warps). Non-default configs that fall back are reported (``HMMA fallback``), not failed: the
tuner may still find them fastest for small layers.

Kernel modules decorate their kernels once, at import, and under the interpreter (the default on a
machine without CUDA) helpers such as ``activate`` become interpreted functions that Triton's
compiler cannot follow. So compiles run in worker processes started with ``TRITON_INTERPRET=0``,
where every kernel module is imported exactly as on a GPU machine (at most 2 workers, each
importing the kernel modules once). Results are cached on disk under ``$SGTRITON_CACHE_DIR/aot``
(default ``~/.cache/sgtriton/aot``), one JSON file per compile, keyed by the kernel's source (with
the ``@triton.jit`` helpers it calls), config, signature, dtype, target and Triton version.

``sgtriton kernels`` lists the declared kernels; ``sgtriton kernels --report`` runs the gate
(:data:`kernels_command`): by default every variant and config; ``--default-config`` and
``--default-variant`` narrow it to what the CI test compiles. ``sgtriton kernels --model`` compiles
the launches one generator forward makes instead, through the same jobs and cache
(:func:`compile_jobs`), and models their time (:mod:`sgtriton.inspection.model`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from sgtriton.cli_options import RESOLUTION
from sgtriton.files import atomic_write
from sgtriton.graph.cost import DEVICE_PEAKS
from sgtriton.inspection.capture import MODEL_DTYPES
from sgtriton.inspection.launches import Specialisation, capture_launch, example_launches, specialise
from sgtriton.inspection.sass import sass_stats
from sgtriton.ops._runtime import (
    KERNELS,
    SHARED_MEMORY_BY_CAPABILITY,
    KernelSpec,
    default_cache_root,
    jit_function,
    kernel_source_hash,
)

#: Compute capabilities compiled by default: A100 (sm_80) and H100 (sm_90a).
DEFAULT_TARGETS = (80, 90)
#: 32-bit registers one block may hold on every target we compile for.
REGISTERS_PER_BLOCK = 65536
#: Dtypes whose ``tl.dot`` must run on tensor cores in kernels declared ``uses_tensor_cores``.
HALF_DTYPES = ("fp16", "bf16")
#: Dtypes whose dots must use wgmma (``HGMMA``) on sm_90 in a default config.
WGMMA_DTYPES = ("fp16", "bf16", "fp32")
#: Bump when the recorded fields or their meaning change, so old cache files are ignored.
GATE_SCHEMA = 2
MAX_WORKERS = 2
#: Compile errors are kept to this many characters (Triton's can include the whole PTX).
MAX_ERROR_CHARS = 4000


# --------------------------------------------------------------------------------------------
# Finding the kernels
# --------------------------------------------------------------------------------------------


def import_all_kernel_modules() -> dict[str, str]:
    """Import every module of ``sgtriton.ops`` and every block plugin, so all kernels are declared.

    Kernel modules add themselves to :data:`~sgtriton.ops._runtime.KERNELS` when imported; block
    plugins (entry points of ``sgtriton.blocks``) are imported by
    :func:`sgtriton.registry.available_blocks` and may declare kernels of their own.
    Returns ``{module: error}`` for every module that failed to import (empty when all imported).
    """
    import sgtriton.ops

    failures: dict[str, str] = {}
    for info in pkgutil.walk_packages(sgtriton.ops.__path__, prefix="sgtriton.ops."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # a broken kernel module is a gate failure, not a crash
            failures[info.name] = f"{type(exc).__name__}: {exc}"
    from sgtriton.registry import available_blocks

    with contextlib.suppress(Exception):  # the registry already warns about broken plugins
        available_blocks()
    return failures


def kernel_module(spec: KernelSpec) -> str:
    """The module that defines ``spec``'s kernel function."""
    return getattr(getattr(spec.fn, "fn", spec.fn), "__module__", "") or ""


def shipped_kernels() -> list[str]:
    """Names of the declared kernels that ship with sgtriton or with an installed block plugin.

    Kernels declared elsewhere (test doubles, notebooks) are left out: the gate's worker processes
    could not import them. Call :func:`import_all_kernel_modules` first.
    """
    from importlib import metadata

    from sgtriton.registry import ENTRY_POINT_GROUP

    packages = {"sgtriton"} | {ep.module.split(".")[0] for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return [name for name, spec in KERNELS.items() if kernel_module(spec).split(".")[0] in packages]


# --------------------------------------------------------------------------------------------
# Reading the compiler's output
# --------------------------------------------------------------------------------------------

_RESOURCE_FUNCTION = re.compile(r"^\s*Function\s+(\S+):\s*$")
_RESOURCE_FIELD = re.compile(r"([A-Z_]+(?:\[\d+\])?):(\d+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """Parse ``cuobjdump --dump-resource-usage``: ``{function: {"REG": 26, "STACK": 0, ...}}``.

    The input looks like::

        Resource usage:
         Function _bias_act_kernel:
          REG:26 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:592 TEXTURE:0 SURFACE:0 SAMPLER:0
    """
    usage: dict[str, dict[str, int]] = {}
    function = None
    for line in text.splitlines():
        match = _RESOURCE_FUNCTION.match(line)
        if match:
            function = match.group(1)
            continue
        fields = _RESOURCE_FIELD.findall(line)
        if function is not None and fields:
            usage[function] = {key: int(value) for key, value in fields}
            function = None
    return usage


def parse_ptxas_spills(log: str) -> tuple[int, int] | None:
    """Spill bytes ``(stores, loads)`` summed over the functions of a ``ptxas -v`` log, or ``None``
    if the log has no ``bytes spill stores`` line."""
    found = _SPILLS.findall(log)
    if not found:
        return None
    return sum(int(s) for s, _ in found), sum(int(loads) for _, loads in found)


def tensor_core_instructions(sass: str) -> tuple[str, ...]:
    """Distinct tensor-core opcodes (``HMMA``, ``HGMMA``, ``IMMA``, ...) in ``cuobjdump -sass`` text.

    An opcode counts when its base (before the first ``.``) ends in ``MMA``; ``HFMA2.MMA`` is an
    FMA issued on another pipe, not a tensor-core instruction, and does not count.
    """
    found = set()
    for line in sass.splitlines():
        match = _SASS_INSTRUCTION.match(line)
        if match and match.group(1).endswith("MMA"):
            found.add(match.group(1))
    return tuple(sorted(found))


def ptx_tensor_core_instructions(ptx: str) -> tuple[str, ...]:
    """Fallback without ``cuobjdump``: the PTX tensor-core instructions (``mma``, ``wgmma``) used."""
    return tuple(sorted(set(re.findall(r"^\s*(?:@%p\d+\s+)?(wgmma|mma)\.", ptx, re.MULTILINE))))


def cuobjdump_path() -> str | None:
    """``cuobjdump`` shipped with Triton (``triton.knobs.nvidia.cuobjdump``), or ``None``."""
    try:
        from triton import knobs

        path = knobs.nvidia.cuobjdump.path
    except Exception:
        return None
    return path if path and os.path.exists(path) else None


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class CompileResult:
    """One ahead-of-time compile: what it used and what went wrong."""

    kernel: str
    config: str
    dtype: str
    target: int
    num_warps: int = 0
    expects_tensor_cores: bool = False
    variant: str = ""
    default_config: bool = False
    hints: dict[str, str] = field(default_factory=dict)
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack_bytes: int | None = None
    shared_bytes: int | None = None
    static_shared_bytes: int | None = None
    mma_ops: tuple[str, ...] = ()
    #: :class:`~sgtriton.inspection.sass.SassStats` as JSON (loops, main-loop counts), when cuobjdump ran.
    sass: dict[str, Any] | None = None
    compile_seconds: float = 0.0
    error: str | None = None
    cached: bool = False
    cacheable: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def spills(self) -> int:
        return (self.spill_stores or 0) + (self.spill_loads or 0)

    @property
    def tensor_cores(self) -> bool:
        return bool(self.mma_ops)

    @property
    def hmma_fallback(self) -> bool:
        """On sm_90, a tensor-core kernel whose dots run as ``HMMA`` instead of wgmma (``HGMMA``)."""
        return (self.target >= 90 and self.expects_tensor_cores and self.dtype in WGMMA_DTYPES
                and "HMMA" in self.mma_ops and "HGMMA" not in self.mma_ops)

    def problems(self) -> list[str]:
        """Why this compile fails the gate (empty when it passes)."""
        if self.error is not None:
            return ["error"]
        found = []
        if self.spills:
            found.append(f"spills {self.spill_stores}B/{self.spill_loads}B")
        limit = _shared_memory_limit(self.target)
        shared = (self.shared_bytes or 0) + (self.static_shared_bytes or 0)
        if limit is not None and shared > limit:
            found.append(f"smem {shared}B > {limit}B")
        if self.registers is not None and self.registers * 32 * self.num_warps > REGISTERS_PER_BLOCK:
            found.append(f"regs {self.registers}x{32 * self.num_warps} threads > {REGISTERS_PER_BLOCK}")
        if self.expects_tensor_cores and self.dtype in HALF_DTYPES and not self.tensor_cores:
            found.append("no tensor cores")
        if self.default_config and self.hmma_fallback:
            found.append("HMMA fallback (no wgmma) in the default config")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mma_ops"] = list(self.mma_ops)
        data["problems"] = self.problems()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompileResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["mma_ops"] = tuple(values.get("mma_ops", ()))
        return cls(**values)


def _shared_memory_limit(capability: int) -> int | None:
    # One table of per-GPU shared memory for the whole package (the tuner prunes configs with it).

    return SHARED_MEMORY_BY_CAPABILITY.get(capability)


# --------------------------------------------------------------------------------------------
# Compiling one job (runs in a worker process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileJob:
    """One compile to run: ``KERNELS[kernel]``'s launch ``variant`` with ``configs[config_index]``
    for ``dtype`` on ``target``, specialised as the launch was (``specialisation``)."""

    kernel: str
    module: str
    config_index: int
    config: str
    dtype: str
    target: int
    num_warps: int
    expects_tensor_cores: bool
    key: str
    variant: str
    specialisation: Specialisation

    def result(self, **values: Any) -> CompileResult:
        return CompileResult(self.kernel, self.config, self.dtype, self.target, self.num_warps,
                             self.expects_tensor_cores, self.variant, self.config_index == 0,
                             dict(self.specialisation.hints), **values)


def _trim(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "\n... (truncated)"


def compile_job(job: CompileJob) -> CompileResult:
    """Compile ``job`` ahead of time and read its resources; errors are returned, not raised.

    Needs kernels decorated with the interpreter off (see the module docstring).
    """
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    log = io.StringIO()
    start = time.perf_counter()
    try:
        if job.kernel not in KERNELS:  # declared by a module no block or ops import reaches
            importlib.import_module(job.module)
        spec = KERNELS[job.kernel]
        found = job.specialisation
        source = ASTSource(fn=jit_function(spec.fn), signature=found.signature, constexprs=found.constexprs,
                           attrs=found.attrs)
        # Triton prints the `ptxas -v` log (spill counts) to stdout when asked to.
        with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(source, target=GPUTarget("cuda", job.target, 32), options=found.options)
    except Exception as exc:
        return job.result(compile_seconds=time.perf_counter() - start,
                          error=_trim(f"{type(exc).__name__}: {exc}"))
    seconds = time.perf_counter() - start
    result = job.result(compile_seconds=seconds, shared_bytes=int(compiled.metadata.shared))
    spills = parse_ptxas_spills(log.getvalue())
    if spills is None:
        result.notes.append("no ptxas log: spills unknown")
    else:
        result.spill_stores, result.spill_loads = spills
    _read_cubin(compiled, result)
    return result


def _read_cubin(compiled: Any, result: CompileResult) -> None:
    """Fill registers, stack, static shared memory and tensor-core opcodes from ``cuobjdump``."""
    tool = cuobjdump_path()
    dump = ""
    if tool is not None:
        with tempfile.TemporaryDirectory(prefix="sgtriton-aot-") as folder:
            cubin = Path(folder) / "kernel.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            done = subprocess.run([tool, "--dump-resource-usage", "-sass", str(cubin)],
                                  capture_output=True, text=True)
            dump = done.stdout if done.returncode == 0 else ""
            if done.returncode != 0:
                result.notes.append(f"cuobjdump failed: {done.stderr.strip()[:200]}")
    usage = parse_resource_usage(dump).get(compiled.metadata.name)
    if usage is not None:
        result.registers = usage.get("REG")
        result.stack_bytes = usage.get("STACK")
        result.static_shared_bytes = usage.get("SHARED")
        result.mma_ops = tensor_core_instructions(dump)
        result.sass = sass_stats(dump).to_json()
    else:
        result.notes.append("no cuobjdump resource usage: tensor cores judged from PTX")
        result.mma_ops = ptx_tensor_core_instructions(compiled.asm.get("ptx", ""))


def _worker_init() -> None:
    failures = import_all_kernel_modules()
    if failures:  # visible in the worker's stderr; the parent reports them as results
        print(f"sgtriton compile gate: modules failed to import: {sorted(failures)}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# The gate: jobs, cache, process pool
# --------------------------------------------------------------------------------------------


def aot_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/aot``; ``root`` defaults to the package's cache root (``$SGTRITON_CACHE_DIR``, else
    ``~/.cache/sgtriton``), the one the tuner uses too."""

    return (Path(root).expanduser() if root is not None else default_cache_root()) / "aot"


def _job_key(spec: KernelSpec, source_hash: str, config_index: int, dtype: str, target: int,
             variant: str, found: Specialisation) -> str:
    import triton

    config = spec.configs[config_index]
    parts = {
        "schema": GATE_SCHEMA, "triton": triton.__version__, "kernel": spec.name, "source": source_hash,
        "config": str(config), "meta": sorted(config.meta.items()), "dtype": dtype, "target": target,
        "variant": variant, "specialisation": found.key(),
        "fp_fusion": os.environ.get("TRITON_DEFAULT_FP_FUSION", ""),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def _cache_read(folder: Path, key: str) -> CompileResult | None:
    try:
        data = json.loads((folder / f"{key}.json").read_text())
        result = CompileResult.from_json(data)
    except (OSError, ValueError, TypeError):
        return None
    result.cached = True
    return result


def _cache_write(folder: Path, key: str, result: CompileResult) -> None:
    with contextlib.suppress(OSError):  # an unwritable cache only costs speed
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{key}.json", json.dumps(result.to_json()))


def select_kernels(names: Iterable[str] | None = None) -> list[KernelSpec]:
    """The declared kernels called ``names`` (:func:`shipped_kernels`, in declaration order, when ``None``)."""
    if names is None:
        return [KERNELS[name] for name in shipped_kernels()]
    names = list(names)
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        raise ValueError(f"kernel={unknown[0]!r}: not declared; declared kernels: {sorted(KERNELS)}")
    return [KERNELS[n] for n in names]


def _hand_specialisation(spec: KernelSpec, config_index: int, dtype: str) -> Specialisation:
    """A kernel without example launches (a test double): its hand-written ``aot_signature``, no hints."""
    if spec.aot_signature is None:
        raise ValueError(f"kernel={spec.name!r}: declares neither example launches nor aot_signature")
    config = spec.configs[config_index]
    signature, constexprs = spec.aot_signature(config, dtype)
    return Specialisation(dict(signature), dict(constexprs), {}, {"num_warps": config.num_warps,
                                                                    "num_stages": config.num_stages}, {})


def _specialisations(spec: KernelSpec, config_index: int, dtype: str, targets: Sequence[int],
                     default_variant_only: bool) -> Iterator[tuple[str, dict[int, Specialisation] | Exception]]:
    """``(variant, {target: specialisation})`` per example launch of ``spec`` (an exception in place
    of the dict when capturing fails); one unnamed variant for a hand-typed ``aot_signature``."""
    if spec.launches is None:
        try:
            found = _hand_specialisation(spec, config_index, dtype)
        except Exception as exc:
            yield "", exc
            return
        yield "", dict.fromkeys(targets, found)
        return
    try:
        calls = example_launches(spec, dtype)
    except Exception as exc:
        yield "-", exc
        return
    for variant, call in list(calls.items())[:1] if default_variant_only else calls.items():
        try:
            launch = capture_launch(spec, call, spec.configs[config_index])
            yield variant, {target: specialise(spec, launch, target) for target in targets}
        except Exception as exc:
            yield variant, exc


def plan_jobs(specs: Sequence[KernelSpec], targets: Sequence[int], default_config_only: bool,
              default_variant_only: bool = False) -> tuple[list[CompileJob], list[CompileResult]]:
    """The compiles to run, and results for combinations whose launch capture already fails.

    Each example launch is captured once per config and dtype (in this process, under the
    interpreter when no GPU is present) and specialised per target.
    """
    jobs: list[CompileJob] = []
    failed: list[CompileResult] = []
    for spec in specs:
        source_hash = kernel_source_hash(spec.fn)
        configs = spec.configs[:1] if default_config_only else spec.configs
        for index, config in enumerate(configs):
            for dtype in (d for d in spec.dtypes if config.applies_to(d)):
                for variant, found in _specialisations(spec, index, dtype, targets, default_variant_only):
                    if isinstance(found, Exception):
                        what = "aot_signature" if spec.launches is None else "launch capture"
                        failed.extend(CompileResult(
                            spec.name, str(config), dtype, target, config.num_warps, spec.uses_tensor_cores,
                            variant, index == 0, error=_trim(f"{what}: {type(found).__name__}: {found}"),
                            cacheable=False) for target in targets)
                        continue
                    for target in targets:
                        key = _job_key(spec, source_hash, index, dtype, target, variant, found[target])
                        jobs.append(CompileJob(spec.name, kernel_module(spec), index, str(config), dtype, target,
                                               config.num_warps, spec.uses_tensor_cores, key, variant,
                                               found[target]))
    return jobs, failed


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _compile_in_workers(jobs: list[CompileJob], workers: int,
                        on_result: Callable[[CompileResult], None]) -> dict[str, CompileResult]:
    """Run ``jobs`` in ``workers`` fresh processes whose kernels are decorated for the GPU compiler."""
    import multiprocessing

    results: dict[str, CompileResult] = {}
    with tempfile.TemporaryDirectory(prefix="sgtriton-aot-triton-cache-") as triton_cache:
        # Spawned workers take the environment of the moment they start, which is inside submit():
        # the interpreter off (kernels decorated for the compiler) and Triton's cache in a scratch
        # folder (ours is the persistent one), only while the pool starts.
        child_env = {"TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": triton_cache}
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init)
        with executor:
            with _environment(child_env):
                futures: list[tuple[CompileJob, Future[CompileResult]]] = [
                    (job, executor.submit(compile_job, job)) for job in jobs]
            for job, future in futures:
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    result = job.result(error=f"worker process died: {exc}", cacheable=False)
                except Exception as exc:
                    result = job.result(error=_trim(f"{type(exc).__name__}: {exc}"), cacheable=False)
                results[job.key] = result
                on_result(result)
    return results


def run_compile_gate(
    kernels: Iterable[str] | None = None,
    targets: Sequence[int] = DEFAULT_TARGETS,
    default_config_only: bool = False,
    workers: int | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    on_result: Callable[[CompileResult], None] | None = None,
    default_variant_only: bool = False,
) -> list[CompileResult]:
    """Compile every declared kernel x launch variant x config x dtype x target ahead of time; one result each.

    ``kernels`` limits the run to those names; ``default_config_only`` compiles only each kernel's
    first (default) config, ``default_variant_only`` only its first example launch; ``workers``
    caps the process pool (at most :data:`MAX_WORKERS`); ``use_cache=False`` recompiles everything
    (and still refreshes the cache). Modules that fail to import and example launches that fail to
    capture come back as failed results, as do compile errors. Results are in declaration order:
    kernel, config, dtype, variant, target.
    """
    targets = tuple(targets)
    for target in targets:
        if _shared_memory_limit(target) is None:
            raise ValueError(f"targets: {target} is not a known compute capability; expected e.g. 80 or 90")
    import_failures = import_all_kernel_modules()
    specs = select_kernels(kernels)
    jobs, results = plan_jobs(specs, targets, default_config_only, default_variant_only)
    for module, error in import_failures.items():
        results.append(CompileResult(module, "-", "-", 0, error=f"import: {error}", cacheable=False))
    report = on_result or (lambda result: None)
    for result in results:
        report(result)

    done = compile_jobs(jobs, workers, use_cache, cache_dir, report)
    return results + [done[job.key] for job in jobs]


def compile_jobs(jobs: Sequence[CompileJob], workers: int | None = None, use_cache: bool = True,
                 cache_dir: str | os.PathLike[str] | None = None,
                 on_result: Callable[[CompileResult], None] | None = None,
                 need_sass: bool = False) -> dict[str, CompileResult]:
    """``{job.key: result}`` for ``jobs``: from the on-disk cache, else compiled in worker processes
    (and cached). ``need_sass`` recompiles cached results that lack SASS statistics."""
    report = on_result or (lambda result: None)
    folder = aot_cache_dir(cache_dir)
    done: dict[str, CompileResult] = {}
    missing: dict[str, CompileJob] = {}
    for job in jobs:
        if job.key in done or job.key in missing:
            continue
        hit = _cache_read(folder, job.key) if use_cache else None
        if hit is None or (need_sass and hit.error is None and hit.sass is None):
            missing[job.key] = job
        else:
            done[job.key] = hit
            report(hit)
    if missing:
        count = max(1, min(workers or MAX_WORKERS, MAX_WORKERS, os.cpu_count() or 1, len(missing)))
        compiled = _compile_in_workers(list(missing.values()), count, report)
        for key, result in compiled.items():
            if result.cacheable:
                _cache_write(folder, key, result)
        done.update(compiled)
    return done


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

REPORT_COLUMNS = ("kernel", "variant", "config", "dtype", "target", "regs", "spills", "smem", "tensor cores",
                  "hints", "time", "status")


def _row(result: CompileResult) -> tuple[str, ...]:
    def number(value: int | None) -> str:
        return "-" if value is None else str(value)

    failed = result.error is not None
    smem = number(result.shared_bytes)
    if result.static_shared_bytes:
        smem += f"+{result.static_shared_bytes}"
    target = f"sm_{result.target}" if result.target else "-"
    divisible = sum(hint == "D" for hint in result.hints.values())
    ones = sum(hint == "=1" for hint in result.hints.values())
    if result.ok:
        status = "ok, HMMA fallback" if result.hmma_fallback else "ok"
    else:
        status = "FAIL: " + "; ".join(result.problems())
    return (
        result.kernel, result.variant or "-", result.config, result.dtype, target,
        "-" if failed else number(result.registers),
        "-" if failed else f"{result.spills}" if result.spill_stores is not None else "?",
        "-" if failed else smem,
        "-" if failed else ",".join(result.mma_ops) or "no",
        f"{divisible}D,{ones}=1",
        "cache" if result.cached else f"{result.compile_seconds:.2f}s",
        status,
    )


def format_report(results: Sequence[CompileResult]) -> str:
    """The gate's results as an aligned table (``smem`` is dynamic, ``+static`` when present)."""
    rows = [REPORT_COLUMNS] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(REPORT_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def summarize(results: Sequence[CompileResult], wall_seconds: float | None = None) -> str:
    """One line: compiles, passes, failures by kind, cache hits and time."""
    failed = [r for r in results if not r.ok]
    kinds: dict[str, int] = {}
    for result in failed:
        for problem in result.problems():
            kind = problem.split(" ")[0] if not problem.startswith("no tensor") else "no tensor cores"
            kinds[kind] = kinds.get(kind, 0) + 1
    kernels = len({r.kernel for r in results})
    line = (f"{len(results)} compiles of {kernels} kernel{'s' * (kernels != 1)}: "
            f"{len(results) - len(failed)} ok, {len(failed)} failed")
    if kinds:
        line += " (" + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")"
    hits = sum(r.cached for r in results)
    compile_s = sum(r.compile_seconds for r in results if not r.cached)
    line += f"; {hits} from cache; {compile_s:.1f}s compiling"
    if wall_seconds is not None:
        line += f", {wall_seconds:.1f}s wall"
    return line


def format_errors(results: Sequence[CompileResult], max_lines: int = 12) -> str:
    """The first lines of each compile error, headed by the combination that raised it."""
    blocks = []
    for r in results:
        if r.error is None:
            continue
        lines = r.error.strip().splitlines()
        shown = "\n    ".join(lines[:max_lines]) + ("\n    ..." if len(lines) > max_lines else "")
        target = f" sm_{r.target}" if r.target else ""
        blocks.append(f"{r.kernel}/{r.variant or '-'} [{r.config}] {r.dtype}{target}:\n    {shown}")
    return "\n".join(blocks)


def _parse_targets(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    targets = []
    for part in value.split(","):
        text = part.strip().lower().removeprefix("sm_").removesuffix("a")
        if not text.isdigit():
            raise click.BadParameter(f"{part!r}: expected compute capabilities like '80,90' or 'sm_90'")
        targets.append(int(text))
    return tuple(targets)


def _format_listing(specs: Sequence[KernelSpec]) -> str:
    rows = [("kernel", "configs", "dtypes", "tensor cores", "module", "description")]
    for spec in specs:
        rows.append((spec.name, str(len(spec.configs)), ",".join(spec.dtypes),
                     "yes" if spec.uses_tensor_cores else "no", kernel_module(spec), spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command("kernels")
@click.option("--report", is_flag=True,
              help="Compile every kernel x config x dtype x target ahead of time and print its resources.")
@click.option("--model", "model", is_flag=True,
              help="Model every launch of one generator forward (--preset, --resolution, --batch, --dtype) "
                   "from exact compiles for one --target; no GPU needed.")
@click.option("--target", "targets", default=None, callback=_parse_targets,
              help="Compute capabilities to compile for, comma-separated [default: 80,90; with --model: sm_90].")
@click.option("--kernel", "kernels", multiple=True, help="Only this kernel (repeatable).")
@click.option("--default-config", "default_config_only", is_flag=True,
              help="Only each kernel's default (first) config.")
@click.option("--default-variant", "default_variant_only", is_flag=True,
              help="Only each kernel's first example launch (its most common flag combination).")
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None,
              type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Also write every result as JSON to this file; '--json' alone prints only the JSON.")
@click.option("--jobs", type=click.IntRange(1, MAX_WORKERS), default=MAX_WORKERS, show_default=True,
              help="Worker processes.")
@click.option("--no-cache", is_flag=True, help="Recompile everything (cache: $SGTRITON_CACHE_DIR/aot).")
@click.option("--preset", default=None, help="--model: the generator preset [default: stylegan2-f].")
@click.option("--resolution", type=RESOLUTION, default=None, help="--model: output resolution [default: 1024].")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="--model: samples per forward [default: 8].")
@click.option("--dtype", type=click.Choice(MODEL_DTYPES), default=None,
              help="--model: fp16 (fp16-marked blocks in fp16, as on CUDA; NVlabs' 4 resolutions when the "
                   "preset marks none) or fp32 [default: fp16].")
@click.option("--fp16-res", "num_fp16_res", type=click.IntRange(min=0), default=None,
              help="--model --dtype fp16: mark this many highest resolutions fp16 instead.")
@click.option("--device", "device", type=click.Choice(sorted(peak.name.lower() for peak in DEVICE_PEAKS)), default=None,
              help="--model: the GPU whose peaks and bandwidth the model uses [default: h200 for sm_90, "
                   "a100 for sm_80].")
@click.option("--measure", is_flag=True,
              help="--model on a CUDA GPU: also time every captured launch (triton.testing.do_bench).")
def kernels_command(report: bool, model: bool, targets: tuple[int, ...] | None, kernels: tuple[str, ...],
                    default_config_only: bool, default_variant_only: bool, json_path: Path | None, jobs: int,
                    no_cache: bool, preset: str | None, resolution: int | None, batch: int | None,
                    dtype: str | None, num_fp16_res: int | None, device: str | None, measure: bool) -> None:
    """List the declared Triton kernels; with --report, compile them for sm_80/sm_90 without a GPU.

    The report shows registers, spills, shared memory (dynamic+static bytes), tensor-core opcodes
    and a status per compile; the command exits with status 1 if any compile fails the gate.
    With --model it models every kernel launch of one generator forward instead
    (docs/performance_model.md): per launch the SASS main loop, occupancy, FLOPs, bytes, a modelled
    and a roofline time; --measure times the same launches on a CUDA GPU.
    """
    model_options = {"--preset": preset, "--resolution": resolution, "--batch": batch, "--dtype": dtype,
                     "--fp16-res": num_fp16_res, "--device": device, "--measure": measure or None}
    if model or measure:
        if report:
            raise click.UsageError("--model and --report: pass one of them")
        _model_command(targets, json_path, no_cache, jobs, preset or "stylegan2-f", resolution or 1024,
                       batch or 8, dtype or "fp16", num_fp16_res, device, measure)
        return
    given = [name for name, value in model_options.items() if value is not None]
    if given:
        raise click.UsageError(f"{given[0]}: only applies with --model")
    targets = targets or DEFAULT_TARGETS
    failures = import_all_kernel_modules()
    try:
        specs = select_kernels(kernels or None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not report:
        click.echo(_format_listing(specs))
        for module, error in failures.items():
            click.echo(f"import failed: {module}: {error}", err=True)
        return
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(desc="compiling", unit="compile", leave=False, disable=None) as bar:
        try:
            results = run_compile_gate(kernels or None, targets, default_config_only, jobs, not no_cache,
                                       on_result=lambda result: bar.update(),
                                       default_variant_only=default_variant_only)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    wall = time.perf_counter() - start
    click.echo(format_report(results))
    errors = format_errors(results)
    if errors:
        click.echo("\nerrors:\n" + errors)
    click.echo(summarize(results, wall))
    if json_path is not None and str(json_path) == "-":
        click.echo(json.dumps([r.to_json() for r in results], indent=1))
    elif json_path is not None:
        atomic_write(json_path, json.dumps([r.to_json() for r in results], indent=1))
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


def _model_command(targets: tuple[int, ...] | None, json_path: Path | None, no_cache: bool, jobs: int, preset: str,
                   resolution: int, batch: int, dtype: str, num_fp16_res: int | None, device: str | None,
                   measure: bool) -> None:
    """``sgtriton kernels --model``: see :mod:`sgtriton.inspection.model`."""
    from tqdm import tqdm

    from sgtriton.config import PRESETS
    from sgtriton.inspection import model as performance

    target = (targets or (90,))
    if len(target) != 1 or target[0] not in performance.TARGET_DEVICES:
        raise click.UsageError(f"--target={','.join(f'sm_{t}' for t in target)}: --model compiles for one target, "
                               f"one of {', '.join(f'sm_{t}' for t in performance.TARGET_DEVICES)}")
    if device is not None and performance.device_by_name(device).capability != target[0]:
        raise click.UsageError(f"--device={device}: an sm_{performance.device_by_name(device).capability} GPU does not "
                               f"run code compiled for --target=sm_{target[0]}; use --device "
                               f"{performance.TARGET_DEVICES[target[0]]}")
    if preset not in PRESETS:
        raise click.UsageError(f"--preset={preset!r}: expected one of {', '.join(sorted(PRESETS))}")
    if measure:
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError(f"--measure: times the launches on a CUDA GPU, and no CUDA device is available "
                                   f"(torch {torch.__version__}); run --model without --measure here")
    with tqdm(desc="compiling", unit="kernel", leave=False, disable=None) as bar:
        try:
            result = performance.model_generator_launches(
                preset, resolution, batch, dtype, target[0], device, num_fp16_res, use_cache=not no_cache,
                on_result=lambda compiled: bar.update(), workers=jobs)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if measure:
        performance.measure_launches(result)
    data = performance.model_json(result)
    if json_path is not None and str(json_path) == "-":
        click.echo(json.dumps(data, indent=1))
    else:
        click.echo(performance.format_model(result))
        if json_path is not None:
            atomic_write(json_path, json.dumps(data, indent=1))
    if any(layer.compiled.error for layer in result.layers):
        raise click.exceptions.Exit(1)


__all__ = [
    "CompileResult",
    "format_report",
    "import_all_kernel_modules",
    "kernel_source_hash",
    "kernels_command",
    "parse_ptxas_spills",
    "parse_resource_usage",
    "run_compile_gate",
    "shipped_kernels",
    "summarize",
    "tensor_core_instructions",
]
