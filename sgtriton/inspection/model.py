"""Static performance model of every kernel launch a generator makes (``sgtriton kernels --model``).

No GPU is needed: the launches of one forward are captured on the CPU
(:mod:`~sgtriton.inspection.capture`), each distinct specialisation is compiled once for the
target with the compile gate's machinery (:func:`~sgtriton.inspection.compile_gate.compile_jobs`:
registers, spills, shared memory, SASS), the SASS is parsed (:mod:`~sgtriton.inspection.sass`) and
each launch's work is read from its arguments (:mod:`~sgtriton.inspection.work`). Per launch, on a
device ``D`` (:data:`~sgtriton.graph.cost.DEVICE_PEAKS`) with ``S`` SMs at clock ``f``::

    occ     = CTAs an SM can hold = min(by registers, by shared memory, by threads, 32)
    waves   = ceil(programs / (S * occ))
    r       = CTAs an SM holds at once = min(occ, ceil(programs / (S * waves)))
    n       = instructions per warp = loop * trips + other_loops * other_trips + outside
    issue   = warps * n / 4                     cycles one CTA needs of an SM's 4 schedulers
    mma     = sum_op MMA FLOPs per CTA / rate[input type of op]   tensor-core cycles per CTA
    compute = waves * max(r * issue, n, r * mma) / f
    memory  = min bytes / copy bandwidth
    modelled = max(compute, memory)
    roofline = max(executed FLOPs / peak, min bytes / peak bandwidth)     (useful: useful FLOPs)

A wave is ``r`` CTAs on every SM sharing its schedulers and tensor cores: it lasts as long as the
busier of the two (``r * issue`` or ``r * mma``), and never less than one warp's own instruction
stream (``n``: a warp issues at most one instruction per clock). ``docs/performance_model.md``
states the figures, their sources and the model's limits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgtriton.graph.cost import DEVICE_PEAKS, DevicePeak
from sgtriton.inspection.capture import GeneratorLaunch, capture_generator, model_generator
from sgtriton.inspection.sass import SassStats, format_widths, mma_flops, mma_input, mma_per_warpgroup
from sgtriton.inspection.work import LaunchArgs, Work, launch_work
from sgtriton.ops._runtime import SHARED_MEMORY_BY_CAPABILITY, triton_dtype

#: Warp schedulers per SM (Volta and later): each issues at most one instruction per clock.
SCHEDULERS_PER_SM = 4
#: Registers are allocated per warp in units of this many (sm_80 and sm_90).
REGISTER_ALLOCATION_UNIT = 256
#: Shared memory is allocated per CTA in units of this many bytes, plus a reserved 1 KB per CTA.
SHARED_ALLOCATION_UNIT = 128
SHARED_RESERVED_PER_CTA = 1024
#: Host-side cost of one kernel launch, *assumed* (not measured here): reported, never added.
LAUNCH_OVERHEAD_S = 4e-6
#: Targets the model compiles for (compute capability) and the default device of each.
TARGET_DEVICES = {90: "h200", 80: "a100"}
#: The style convs the issue's acceptance totals: 3x3 kernels at these resolutions.
STYLE_CONV_RESOLUTIONS = (32, 512)


def device_by_name(name: str) -> DevicePeak:
    """``'h200'`` -> the :data:`DEVICE_PEAKS` entry of that name."""
    for peak in DEVICE_PEAKS:
        if peak.name.lower() == name.lower():
            return peak
    raise ValueError(f"device={name!r}: expected one of {sorted(peak.name.lower() for peak in DEVICE_PEAKS)}")


@dataclass(frozen=True)
class Occupancy:
    """CTAs one SM holds at once, and what limits it (``registers``, ``shared``, ``threads``, ``cap``)."""

    ctas: int
    limit: str
    by_limit: dict[str, int]


def occupancy(registers: int, num_warps: int, shared_bytes: int, device: DevicePeak) -> Occupancy:
    """Resident CTAs per SM for a kernel of ``registers`` per thread, ``num_warps`` warps and
    ``shared_bytes`` (dynamic + static) of shared memory per CTA, on ``device``."""
    per_warp = math.ceil(registers * 32 / REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    by_registers = (device.registers_per_sm // per_warp) // num_warps if per_warp else device.ctas_per_sm
    per_block_limit = SHARED_MEMORY_BY_CAPABILITY.get(device.capability, device.shared_per_sm)
    shared = math.ceil(shared_bytes / SHARED_ALLOCATION_UNIT) * SHARED_ALLOCATION_UNIT + SHARED_RESERVED_PER_CTA
    by_shared = 0 if shared_bytes > per_block_limit else device.shared_per_sm // shared
    by_limit = {"registers": by_registers, "shared": by_shared,
                "threads": device.threads_per_sm // (32 * num_warps), "cap": device.ctas_per_sm}
    limit = min(by_limit, key=lambda name: by_limit[name])
    return Occupancy(by_limit[limit], limit, by_limit)


@dataclass(frozen=True)
class CompiledKernel:
    """What one compile of a launch's specialisation reports (from the compile gate)."""

    registers: int
    spills: int
    shared_bytes: int
    num_warps: int
    sass: SassStats
    error: str | None = None


@dataclass
class LaunchModel:
    """The model of one launch (all times in seconds)."""

    launch: GeneratorLaunch
    work: Work
    compiled: CompiledKernel
    occupancy: Occupancy
    instructions_per_warp: float
    issue_cycles: float
    mma_cycles: float
    waves: int
    compute_s: float
    memory_s: float
    modelled_s: float
    roofline_s: float
    useful_roofline_s: float
    peak_key: str
    kh: int | None = None
    measured_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.roofline_s / self.modelled_s if self.modelled_s else 0.0


def mma_cycles_per_cta(sass: SassStats, trips: int, num_warps: int, device: DevicePeak) -> tuple[float, str]:
    """Tensor-core cycles one CTA needs (main-loop MMAs x ``trips``, others once) and the input
    type of its MMAs (``'fp32'`` when it has none: the roofline then uses the CUDA-core peak)."""
    cycles = 0.0
    kinds = set()
    for opcode, count in sass.kernel_mma.items():
        in_loop = sass.loop_mma.get(opcode, 0)
        executions = in_loop * trips + (count - in_loop)
        copies = num_warps / 4 if mma_per_warpgroup(opcode) else num_warps
        kind = mma_input(opcode)
        kinds.add(kind)
        rate = device.tensor_flops_per_clock.get(kind, device.tensor_flops_per_clock["fp16"])
        cycles += executions * copies * mma_flops(opcode) / rate
    peak_key = "tf32" if "tf32" in kinds else ("fp16" if kinds else "fp32")
    return cycles, peak_key


def model_launch(launch: GeneratorLaunch, work: Work, compiled: CompiledKernel, device: DevicePeak) -> LaunchModel:
    """The model of one launch (the formulas in the module docstring)."""
    sass = compiled.sass
    occ = occupancy(compiled.registers, compiled.num_warps, compiled.shared_bytes, device)
    resident = max(occ.ctas, 1)
    trips = work.main_trips
    other_trips = trips if work.other_trips is None else work.other_trips
    instructions = sass.loop_instructions * trips + sass.other_loop_instructions * other_trips \
        + sass.outside_instructions
    issue = compiled.num_warps * instructions / SCHEDULERS_PER_SM
    mma, peak_key = mma_cycles_per_cta(sass, trips, compiled.num_warps, device)
    waves = math.ceil(work.programs / (device.sms * resident)) if work.programs else 0
    # CTAs an SM actually holds at once: fewer than it could when the grid is small.
    resident = min(resident, math.ceil(work.programs / (device.sms * waves))) if waves else 0
    compute = waves * max(resident * issue, instructions, resident * mma) / device.clock_hz
    memory = work.bytes / device.copy_bandwidth
    peak = device.flops[peak_key]
    roofline = max(work.flops / peak, work.bytes / device.bandwidth)
    useful = max(work.useful_flops / peak, work.bytes / device.bandwidth)
    notes = list(work.notes)
    if occ.ctas == 0:
        notes.append(f"does not fit on an SM ({occ.limit}); modelled as one CTA per SM")
    if compiled.spills:
        notes.append(f"spills {compiled.spills} B (local memory traffic not modelled)")
    if compiled.error:
        notes.append(f"compile failed: {compiled.error.splitlines()[0][:160]}")
    kh = LaunchArgs(launch.spec, launch.launch).get("KH") if work.kind in ("conv", "torgb") else None
    return LaunchModel(launch, work, compiled, occ, instructions, issue, mma, waves, compute, memory,
                       max(compute, memory), roofline, useful, peak_key, int(kh) if kh is not None else None,
                       notes=notes)


# --------------------------------------------------------------------------------------------
# Compiling the captured launches
# --------------------------------------------------------------------------------------------


def launch_dtype(launch: GeneratorLaunch) -> str:
    """The dtype of the launch's first tensor argument (``'fp16'``, ``'fp32'``)."""
    import torch

    for value in launch.launch.args:
        if isinstance(value, torch.Tensor):
            return triton_dtype(value.dtype)
    return "fp32"


def compile_launches(launches: Sequence[GeneratorLaunch], target: int, use_cache: bool = True,
                     workers: int | None = None, on_result: Callable[[Any], None] | None = None,
                     ) -> list[CompiledKernel]:
    """One :class:`CompiledKernel` per launch; each distinct specialisation (``Specialisation.key()``)
    is compiled once, in the compile gate's worker processes and on-disk cache."""
    from sgtriton.inspection.compile_gate import CompileJob, _job_key, compile_jobs, kernel_module
    from sgtriton.inspection.launches import specialise
    from sgtriton.ops._runtime import kernel_source_hash

    hashes: dict[str, str] = {}
    by_specialisation: dict[tuple[str, str], CompileJob] = {}
    job_of_launch: list[CompileJob] = []
    for item in launches:
        spec = item.spec
        found = specialise(spec, item.launch, target)
        memo = (spec.name, found.key())
        job = by_specialisation.get(memo)
        if job is None:
            if spec.name not in hashes:
                hashes[spec.name] = kernel_source_hash(spec.fn)
            index = spec.configs.index(item.config) if item.config in spec.configs else 0
            dtype = launch_dtype(item)
            key = _job_key(spec, hashes[spec.name], index, dtype, target, "model", found)
            job = CompileJob(spec.name, kernel_module(spec), index, str(item.config), dtype, target,
                             item.config.num_warps, spec.uses_tensor_cores, key, "model", found)
            by_specialisation[memo] = job
        job_of_launch.append(job)
    results = compile_jobs(list(by_specialisation.values()), workers, use_cache, on_result=on_result,
                           need_sass=True)
    compiled = []
    for job in job_of_launch:
        result = results[job.key]
        sass = SassStats.from_json(result.sass) if result.sass else SassStats()
        shared = (result.shared_bytes or 0) + (result.static_shared_bytes or 0)
        compiled.append(CompiledKernel(result.registers or 0, result.spills, shared, job.num_warps, sass,
                                       result.error))
    return compiled


# --------------------------------------------------------------------------------------------
# The whole generator
# --------------------------------------------------------------------------------------------


@dataclass
class GeneratorModel:
    """Every launch of one forward, modelled, and what it was built from."""

    preset: str
    resolution: int
    batch: int
    dtype: str
    target: int
    device: DevicePeak
    layers: list[LaunchModel]
    seconds: dict[str, float]


def model_generator_launches(preset: str, resolution: int, batch: int, dtype: str, target: int = 90,
                             device: str | None = None, num_fp16_res: int | None = None, use_cache: bool = True,
                             on_result: Callable[[Any], None] | None = None,
                             workers: int | None = None) -> GeneratorModel:
    """Capture, compile and model every launch of ``preset`` at ``resolution``, ``batch``, ``dtype``."""
    import torch

    if target not in TARGET_DEVICES:
        raise ValueError(f"target=sm_{target}: expected one of {', '.join(f'sm_{t}' for t in TARGET_DEVICES)}")
    peak = device_by_name(device or TARGET_DEVICES[target])
    if peak.capability != target:
        raise ValueError(f"device={device!r} is sm_{peak.capability}; it cannot run code compiled for "
                         f"target=sm_{target} (use --device {TARGET_DEVICES[target]})")
    start = time.perf_counter()
    G = model_generator(preset, resolution, dtype, num_fp16_res)
    if torch.cuda.is_available():  # off the interpreter, launchers take CUDA tensors only
        G = G.to("cuda")
    launches = capture_generator(G, batch, dtype, target)
    captured = time.perf_counter()
    compiled = compile_launches(launches, target, use_cache, workers, on_result)
    done = time.perf_counter()
    layers = [model_launch(item, launch_work(item.spec, item.launch), kernel, peak)
              for item, kernel in zip(launches, compiled, strict=True)]
    seconds = {"capture": captured - start, "compile": done - captured, "model": time.perf_counter() - done}
    return GeneratorModel(preset, resolution, batch, dtype, target, peak, layers, seconds)


def is_style_conv(layer: LaunchModel) -> bool:
    """A 3x3 style conv at 32^2..512^2 (the issue's acceptance set), its prologue launch included."""
    low, high = STYLE_CONV_RESOLUTIONS
    resolution = layer.launch.resolution or 0
    if not low <= resolution <= high:
        return False
    return (layer.work.kind == "conv" and layer.kh == 3) or layer.work.kind == "prologue"


#: Named subsets of the launches that get a total line.
TOTALS: dict[str, Callable[[LaunchModel], bool]] = {
    "all": lambda layer: True,
    "style_convs_32_512": is_style_conv,
    "synthesis": lambda layer: layer.launch.layer.startswith("synthesis"),
    "mapping": lambda layer: layer.launch.layer.startswith("mapping"),
}


def total(layers: Sequence[LaunchModel]) -> dict[str, Any]:
    """Sums over ``layers``: times in µs, FLOPs, bytes, fractions of the sums."""
    modelled = sum(layer.modelled_s for layer in layers)
    roofline = sum(layer.roofline_s for layer in layers)
    useful = sum(layer.useful_roofline_s for layer in layers)
    measured = [layer.measured_s for layer in layers if layer.measured_s is not None]
    data = {
        "launches": len(layers),
        "modelled_us": modelled * 1e6,
        "roofline_us": roofline * 1e6,
        "useful_roofline_us": useful * 1e6,
        "fraction": roofline / modelled if modelled else 0.0,
        "useful_fraction": useful / modelled if modelled else 0.0,
        "flops": sum(layer.work.flops for layer in layers),
        "useful_flops": sum(layer.work.useful_flops for layer in layers),
        "bytes": sum(layer.work.bytes for layer in layers),
        "launch_overhead_us": len(layers) * LAUNCH_OVERHEAD_S * 1e6,
    }
    if measured and len(measured) == len(layers):
        data["measured_us"] = sum(measured) * 1e6
    return data


def layer_json(layer: LaunchModel) -> dict[str, Any]:
    item, work, compiled, sass = layer.launch, layer.work, layer.compiled, layer.compiled.sass
    data = {
        "name": item.layer, "kind": work.kind, "resolution": item.resolution, "kernel": item.kernel,
        "config": str(item.config), "modelled_us": layer.modelled_s * 1e6, "roofline_us": layer.roofline_s * 1e6,
        "useful_roofline_us": layer.useful_roofline_s * 1e6, "fraction": layer.fraction,
        "index": item.index, "dtype": launch_dtype(item), "kh": layer.kh,
        "grid": list(LaunchArgs(item.spec, item.launch).grid), "programs": work.programs,
        "main_trips": work.main_trips, "other_trips": work.other_trips,
        "instr_per_iter": sass.loop_instructions, "other_loop_instr": sass.other_loop_instructions,
        "outside_instr": sass.outside_instructions, "instructions_per_warp": layer.instructions_per_warp,
        "main_loop": [hex(a) for a in sass.main_loop] if sass.main_loop else None,
        "mma_per_iter": sum(sass.loop_mma.values()), "mma_kind": sorted(sass.loop_mma) or sorted(sass.kernel_mma),
        "loop_global": sass.loop_global, "kernel_global": sass.kernel_global,
        "registers": compiled.registers, "spills": compiled.spills, "shared_bytes": compiled.shared_bytes,
        "num_warps": compiled.num_warps, "occupancy": layer.occupancy.ctas, "occupancy_limit": layer.occupancy.limit,
        "waves": layer.waves, "issue_cycles_per_cta": layer.issue_cycles, "mma_cycles_per_cta": layer.mma_cycles,
        "compute_us": layer.compute_s * 1e6, "memory_us": layer.memory_s * 1e6, "peak": layer.peak_key,
        "flops": work.flops, "useful_flops": work.useful_flops, "bytes": work.bytes, "notes": layer.notes,
    }
    if layer.measured_s is not None:
        data["measured_us"] = layer.measured_s * 1e6
    return data


def model_json(result: GeneratorModel) -> dict[str, Any]:
    """``{"layers": [...], "totals": {...}}``: one entry per launch, a sum per :data:`TOTALS` subset, and
    ``totals["setup"]``, what the model was built from (generator, device figures, seconds taken)."""
    totals: dict[str, Any] = {name: total([layer for layer in result.layers if keep(layer)])
                              for name, keep in TOTALS.items()}
    totals["setup"] = {"preset": result.preset, "resolution": result.resolution, "batch": result.batch,
                       "dtype": result.dtype, "target": f"sm_{result.target}", "device": result.device.name,
                       "clock_hz": result.device.clock_hz, "sms": result.device.sms,
                       "peak_flops": result.device.flops, "bandwidth": result.device.bandwidth,
                       "copy_bandwidth": result.device.copy_bandwidth, "launch_overhead_s": LAUNCH_OVERHEAD_S,
                       "seconds": result.seconds}
    return {"layers": [layer_json(layer) for layer in result.layers], "totals": totals}


_COLUMNS = ("layer", "kind", "res", "kernel", "config", "grid", "progs", "instr/it", "mma/it", "loads (loop)",
            "regs", "smem", "occ", "GFLOP", "MB", "model us", "roof us", "frac")


def _row(layer: LaunchModel) -> tuple[str, ...]:
    item, work, sass = layer.launch, layer.work, layer.compiled.sass
    mma = ",".join(f"{n}x{op.removeprefix('HGMMA.').removeprefix('HMMA.')}" for op, n in sass.loop_mma.items())
    loads = {k: v for k, v in sass.loop_global.items() if k.startswith(("LDG", "UTMA"))}
    row = (item.layer, work.kind, str(item.resolution or "-"), item.kernel, str(item.config),
           "x".join(map(str, LaunchArgs(item.spec, item.launch).grid)), str(work.programs),
           str(sass.loop_instructions), mma or "-", format_widths(loads), str(layer.compiled.registers),
           str(layer.compiled.shared_bytes), f"{layer.occupancy.ctas}({layer.occupancy.limit[:3]})",
           f"{work.flops / 1e9:.2f}", f"{work.bytes / 1e6:.2f}", f"{layer.modelled_s * 1e6:.1f}",
           f"{layer.roofline_s * 1e6:.1f}", f"{layer.fraction:.2f}")
    if layer.measured_s is not None:
        row += (f"{layer.measured_s * 1e6:.1f}",)
    return row


def format_model(result: GeneratorModel) -> str:
    """The model as text: a table per launch, then the totals."""
    measured = any(layer.measured_s is not None for layer in result.layers)
    header = _COLUMNS + (("measured us",) if measured else ())
    rows = [header] + [_row(layer) for layer in result.layers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{result.preset} {result.resolution}^2 batch {result.batch} {result.dtype} on sm_{result.target} "
             f"({result.device.name}: {result.device.sms} SMs x {result.device.clock_hz / 1e9:.2f} GHz, "
             f"{result.device.flops['fp16'] / 1e12:.1f} TFLOP/s fp16, {result.device.bandwidth / 1e12:.2f} TB/s "
             f"peak / {result.device.copy_bandwidth / 1e12:.2f} copy)"]
    lines += ["  ".join(cell.rjust(width) if i >= 5 else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    lines.append("")
    for name, keep in TOTALS.items():
        data = total([layer for layer in result.layers if keep(layer)])
        line = (f"{name:<20} {data['launches']:>4} launches  modelled {data['modelled_us']:>10.1f} us  "
                f"roofline {data['roofline_us']:>9.1f} us ({data['fraction']:.1%})  useful roofline "
                f"{data['useful_roofline_us']:>9.1f} us ({data['useful_fraction']:.1%})  "
                f"launch overhead ~{data['launch_overhead_us']:.0f} us")
        if "measured_us" in data:
            line += f"  measured {data['measured_us']:.1f} us"
        lines.append(line)
    notes = sorted({note for layer in result.layers for note in layer.notes})
    if notes:
        lines.append("notes: " + "; ".join(notes))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Measuring the same launches on a GPU
# --------------------------------------------------------------------------------------------


def measure_launches(result: GeneratorModel) -> None:
    """Time every captured launch on the current CUDA device (``triton.testing.do_bench``), in place.

    Each launch is re-issued on the real ``@triton.jit`` kernel with its captured arguments: the
    captured tensors (CUDA, uninitialised) are filled with random values once, so the kernels
    read finite numbers; aliasing and alignment are the launch's own.
    """
    import torch
    import triton

    if not torch.cuda.is_available():
        raise RuntimeError("--measure needs a CUDA device; none is available (torch.cuda.is_available() "
                           "is False)")
    fill_captured_tensors([value for layer in result.layers
                           for value in (*layer.launch.launch.args, *layer.launch.launch.kwargs.values())])
    for layer in result.layers:
        item = layer.launch
        kernel = item.spec.fn
        grid = LaunchArgs(item.spec, item.launch).grid

        def run(kernel: Any = kernel, grid: tuple = grid, item: GeneratorLaunch = item) -> None:
            kernel[grid](*item.launch.args, **item.launch.kwargs)

        layer.measured_s = triton.testing.do_bench(run) * 1e-3


def fill_captured_tensors(values: Sequence[Any]) -> int:
    """Fill the storage behind every floating-point tensor in ``values`` once with values in about
    ``[0.2, 0.8]`` (positive: styles and max-abs scales stay finite); returns the storages filled."""
    import torch

    filled: set[int] = set()
    for value in values:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        storage = value.untyped_storage()
        if storage.data_ptr() in filled:
            continue
        filled.add(storage.data_ptr())
        flat = torch.empty(0, dtype=value.dtype, device=value.device)
        flat.set_(storage, 0, (storage.nbytes() // value.element_size(),))
        flat.uniform_(0.2, 0.8)
    return len(filled)


__all__ = ["GeneratorModel", "LaunchModel", "Occupancy", "compile_launches", "format_model",
           "measure_launches", "model_generator_launches", "model_json", "model_launch", "occupancy", "total"]
