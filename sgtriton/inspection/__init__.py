"""Inspecting kernels without running them: what a launch compiles, and the ahead-of-time compile gate.

This package imports the kernels (``sgtriton.ops`` and block plugins); no kernel module imports it.

* :mod:`sgtriton.inspection.launches` -- capture a launcher's kernel arguments and specialise them
  as Triton's JIT does;
* :mod:`sgtriton.inspection.compile_gate` -- compile every kernel, variant, config, dtype and target
  for sm_80/sm_90 and read registers, spills, shared memory and tensor-core instructions
  (``sgtriton kernels --report``);
* :mod:`sgtriton.inspection.capture`, :mod:`~sgtriton.inspection.sass`, :mod:`~sgtriton.inspection.work`
  and :mod:`~sgtriton.inspection.model` -- the static performance model of every launch a generator
  makes (``sgtriton kernels --model``, ``docs/performance_model.md``).
"""
