"""Every kernel launch of one generator forward, captured on the CPU without running a kernel.

:func:`capture_generator` replaces every declared kernel (:data:`~sgtriton.ops._runtime.KERNELS`,
block plugins' included) by a recorder that records the launch -- grid, positional and keyword
arguments -- and returns without running anything, then runs one forward ``G(z)`` of a
generator built on the Triton backend. Launchers still validate and lay out their tensors as on a
GPU, and allocate their outputs with ``torch.empty`` (never touched, so a 1024^2 batch-8 forward
costs little memory and no kernel time); what flows on from one kernel to the next is uninitialised
memory, which is fine because nothing on the host reads it.

Each launch gets:

* the declared kernel it launches: a launcher asks :func:`~sgtriton.ops._runtime.launch_config`
  for its spec's config just before launching, and :func:`~sgtriton.ops._runtime.planned_configs`
  observes that call (several specs share one ``@triton.jit`` function: ``modconv2d``,
  ``modconv2d_up2`` and ``torgb``);
* the config a GPU run of this target would use: the shipped tuning table's (``sm_90.json``) when
  it is measured and has the bucket, else the kernel's default;
* the layer it belongs to: the innermost module being executed (a forward pre-hook stack), e.g.
  ``synthesis.b64.conv1`` for the conv and ``synthesis.b64.conv1.affine`` for its affine, and the
  resolution of the innermost module that has one.

Precision follows the rule a CUDA run applies (:func:`~sgtriton.graph.synthesis.block_runs_fp16`):
fp16-marked blocks (``num_fp16_res``) in fp16 unless ``force_fp32``; the mapping network and the
image path in fp32. The CPU forward runs inside :func:`~sgtriton.graph.synthesis.fp16_as_on_cuda`,
so it launches exactly the fp16 kernels a CUDA forward would.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sgtriton.inspection.launches import CapturedLaunch, _Recorder, replaced_kernels
from sgtriton.ops._runtime import KERNELS, KernelConfig, KernelSpec, key_dtype, planned_configs

#: Precisions a generator can be modelled in (``--dtype``).
MODEL_DTYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class GeneratorLaunch:
    """One kernel launch of a generator forward, in launch order."""

    index: int
    kernel: str
    layer: str
    resolution: int | None
    config: KernelConfig
    launch: CapturedLaunch

    @property
    def spec(self) -> KernelSpec:
        return KERNELS[self.kernel]


def model_generator(preset: str, resolution: int, dtype: str, num_fp16_res: int | None = None) -> nn.Module:
    """The CPU generator whose launches the model reads: ``preset`` at ``resolution``, Triton backend.

    ``dtype='fp16'`` marks the ``num_fp16_res`` highest resolutions fp16; by default the preset's own
    marking, or NVlabs' mixed precision (:data:`~sgtriton.config.NVLABS_MIXED_PRECISION`: 4
    resolutions, ``conv_clamp=256``) when the preset marks none -- the generator the benchmarks
    call fp16. ``dtype='fp32'`` runs everything in fp32 (``force_fp32``).
    """
    from sgtriton.config import NVLABS_MIXED_PRECISION, PRESETS, make_config
    from sgtriton.generator import build_generator

    if dtype not in MODEL_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {MODEL_DTYPES}")
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: expected one of {sorted(PRESETS)}")
    extra: dict[str, Any] = {}
    if dtype == "fp16":
        if num_fp16_res is not None:
            extra["num_fp16_res"] = num_fp16_res
        elif not make_config(preset, img_resolution=resolution).synthesis.num_fp16_res:
            extra.update(NVLABS_MIXED_PRECISION)
    return build_generator(preset, img_resolution=resolution, backend="triton", seed=0, **extra)


class _LayerStack:
    """Forward pre-/post-hooks on every module: which module (and resolution) is running now."""

    def __init__(self, root: nn.Module) -> None:
        self.stack: list[tuple[str, int | None]] = []
        self.handles = []
        for name, module in root.named_modules():
            if not name:
                continue
            resolution = getattr(module, "resolution", None)
            self.handles.append(module.register_forward_pre_hook(self._enter(name, resolution)))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str, resolution: Any):
        def hook(module: nn.Module, args: Any) -> None:
            inherited = next((r for _, r in reversed(self.stack) if r is not None), None)
            self.stack.append((name, resolution if isinstance(resolution, int) else inherited))
        return hook

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        self.stack.pop()

    def current(self) -> tuple[str, int | None]:
        return self.stack[-1] if self.stack else ("-", None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def capture_generator(G: nn.Module, batch: int, dtype: str, target: int | None = None) -> list[GeneratorLaunch]:
    """The kernel launches of one forward ``G(z, c, noise_mode='const')`` of ``batch`` samples, in order.

    ``G`` must run on the Triton backend on the CPU (kernels are never executed). ``dtype`` is
    ``'fp16'`` (fp16-marked blocks in fp16, as on CUDA) or ``'fp32'`` (``force_fp32``). ``target``
    (a compute capability, e.g. 90) picks the shipped tuning table consulted for configs.
    """
    from sgtriton.graph.synthesis import fp16_as_on_cuda
    from sgtriton.inspection.compile_gate import import_all_kernel_modules

    if dtype not in MODEL_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {MODEL_DTYPES}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r}: expected an int >= 1")
    import_all_kernel_modules()
    asked: list[tuple[KernelSpec, KernelConfig]] = []

    def choose(spec: KernelSpec, key: Hashable) -> KernelConfig:
        config = _table_config(spec, key, target)
        if config is None or not config.applies_to(key_dtype(key)):  # as launch_config decides
            config = spec.untuned_config(key)
        asked.append((spec, config))
        return config

    layers = _LayerStack(G)
    found: list[GeneratorLaunch] = []
    replacements: dict[int, tuple[Any, Any]] = {}
    for spec in list(KERNELS.values()):
        if id(spec.fn) in replacements:
            continue
        fn = spec.fn

        def on_launch(launch: CapturedLaunch, fn: Any = fn) -> None:
            spec, config = _launching_spec(fn, asked)
            layer, resolution = layers.current()
            found.append(GeneratorLaunch(len(found), spec.name, layer, resolution, config, launch))

        replacements[id(fn)] = (fn, _Recorder(stop=False, on_launch=on_launch))

    device = next(G.parameters()).device
    generator = torch.Generator().manual_seed(0)
    z = torch.randn([batch, G.z_dim], generator=generator).to(device)
    c = torch.zeros([batch, G.c_dim], device=device) if G.c_dim else None
    try:
        with torch.no_grad(), replaced_kernels(replacements), planned_configs(choose):
            if dtype == "fp16":
                with fp16_as_on_cuda():
                    G(z, c, noise_mode="const")
            else:
                G(z, c, noise_mode="const", force_fp32=True)
    finally:
        layers.remove()
    return found


def _launching_spec(fn: Any, asked: list[tuple[KernelSpec, KernelConfig]]) -> tuple[KernelSpec, KernelConfig]:
    """The spec (and config) of the latest config request for a kernel of function ``fn``; without
    one (a launcher that passed its own config), the first spec declared with ``fn``."""
    for spec, config in reversed(asked):
        if spec.fn is fn:
            return spec, config
    spec = next(s for s in KERNELS.values() if s.fn is fn)
    return spec, spec.default_config


def _table_config(spec: KernelSpec, key: Hashable, target: int | None) -> KernelConfig | None:
    """The shipped table's config for ``spec`` at shape ``key`` on ``target`` (None if unmeasured/absent)."""
    if target is None:
        return None
    from sgtriton.autotune.buckets import bucket_key, bucket_label
    from sgtriton.autotune.tables import table_config

    try:
        return table_config(spec, bucket_label(bucket_key(spec, key)), f"sm_{target}")
    except Exception:  # a key the buckets cannot read: the launch keeps its default config
        return None


__all__ = ["MODEL_DTYPES", "GeneratorLaunch", "capture_generator", "model_generator"]
