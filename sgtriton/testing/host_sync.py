"""Prove that a forward issues device work only: no host syncs, no tensors made on the host.

A CUDA graph records what the host enqueues on a stream and replays it without the host, so a
forward can be captured only if, after its warm-up, it never needs the host to see a device value
or to feed the device host memory. On a GPU such a call fails the capture; :func:`no_host_syncs`
finds the same calls on any device, the CPU included (the Triton backend under the interpreter
and the reference backend alike), by wrapping those torch functions and tensor methods while it
is active.

What counts, and why each one is refused:

* **reading a value on the host** -- ``item``, ``tolist``, ``numpy``/``__array__``, ``cpu``, and
  ``bool``/``int``/``float``/``index`` of a tensor (so ``if t: ...``, ``range(t)``,
  ``float(t)`` too): on CUDA each waits for the stream to drain (a sync);
* **an output shape that depends on data** -- ``nonzero``, ``argwhere``, ``masked_select``,
  ``unique``, ``unique_consecutive``, one-argument ``where``, boolean-mask indexing, and
  ``repeat_interleave`` with tensor repeats but no ``output_size``: the host must read the data to
  allocate the output (a sync);
* **a tensor made from host data or on the host** -- ``torch.tensor``/``as_tensor``/``asarray`` of
  Python or NumPy data, and factories (``arange``, ``zeros``, ``randn`` ...) called without
  ``device=``, which make a CPU tensor that a CUDA forward then copies to the device: a copy
  from pageable memory per call, which a graph would freeze at its capture-time contents
  (``torch.randn(..., generator=cpu_generator)`` is such a call);
* **a copy between devices** -- ``to``/``cuda``/``copy_`` whose source and destination devices
  differ.

Calls made by Triton's interpreter while it executes a kernel are not counted: they stand in for
the GPU running that kernel. Ops that only allocate on the tensor's device (``empty_like``,
``new_zeros``, factories given ``device=``) and every other computation are device work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch


class HostSyncError(RuntimeError):
    """A forward asked for host work that a CUDA graph cannot replay (see the module docstring)."""


_T = torch.Tensor
#: Methods that read a device value on the host.
VALUE_READS = (_T.item, _T.tolist, _T.numpy, _T.__array__, _T.cpu, _T.__bool__, _T.__int__, _T.__float__,
               _T.__index__, _T.__complex__)
#: Ops whose output shape depends on the data.
DATA_DEPENDENT = (torch.nonzero, _T.nonzero, torch.argwhere, _T.argwhere, torch.masked_select, _T.masked_select,
                  torch.unique, _T.unique, torch.unique_consecutive, _T.unique_consecutive)
#: Functions that turn host data into a tensor.
FROM_HOST_DATA = (torch.tensor, torch.as_tensor, torch.asarray)
#: Factories that make a tensor on the default (host) device unless given ``device=``.
FACTORIES = (torch.arange, torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn,
             torch.randint, torch.randperm, torch.linspace, torch.logspace, torch.eye, torch.empty_strided,
             torch.scalar_tensor, torch.normal)
COPIES = (_T.to, _T.cuda, _T.copy_)
#: Judged by their arguments (the originals: the check replaces the attributes while it runs).
WHERE = torch.where
INDEXING = (_T.__getitem__, _T.__setitem__)
REPEATS = (torch.repeat_interleave, _T.repeat_interleave)


def _devices(args: tuple, kwargs: dict) -> set[torch.device]:
    found = set()
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.add(value.device)
        elif isinstance(value, (str, torch.device)):
            with contextlib.suppress(RuntimeError, TypeError):
                found.add(torch.device(value))
    return found


def host_work(func: Callable, args: tuple, kwargs: dict) -> str | None:
    """Why calling ``func(*args, **kwargs)`` is host work, or ``None`` when it is device work only."""
    if func in VALUE_READS:
        return "reads a tensor value on the host"
    if func in DATA_DEPENDENT:
        return "has an output shape that depends on the data"
    if func is WHERE and len(args) + len(kwargs) == 1:
        return "has an output shape that depends on the data (one-argument where)"
    if func in INDEXING and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in index):
            return "indexes with a boolean mask (an output shape that depends on the data)"
    if func in REPEATS and kwargs.get("output_size") is None:
        repeats = kwargs.get("repeats", args[1] if len(args) > 1 else None)
        if isinstance(repeats, torch.Tensor) and repeats.numel() > 1:
            return "repeats by a tensor without output_size (an output shape that depends on the data)"
    if func in FROM_HOST_DATA and not isinstance(args[0] if args else kwargs.get("data"), torch.Tensor):
        return "makes a tensor from host data (a host-to-device copy per call)"
    if func in FACTORIES and kwargs.get("device") is None:
        return "makes a tensor on the host (no device=), which a device forward would copy over per call"
    if func in COPIES and len(_devices(args, kwargs)) > 1:
        return "copies between devices"
    return None


#: ``(owner, attribute)`` of every function :func:`host_work` judges: the check wraps these in place.
CHECKED = tuple(
    (owner, func.__name__)
    for owner, funcs in ((_T, (*VALUE_READS, *DATA_DEPENDENT, *COPIES, *INDEXING, *REPEATS)),
                         (torch, (*DATA_DEPENDENT, *FROM_HOST_DATA, *FACTORIES, WHERE, *REPEATS)))
    for func in funcs if getattr(owner, func.__name__, None) is func
)


class _Check:
    """The wrappers' shared state: paused while Triton's interpreter runs a kernel."""

    def __init__(self) -> None:
        self.paused = 0

    def wrap(self, func: Callable, name: str) -> Callable:
        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not self.paused:
                reason = host_work(func, args, kwargs)
                if reason is not None:
                    raise HostSyncError(f"{name} {reason}; a CUDA graph cannot replay it")
            return func(*args, **kwargs)

        return checked

    def exempt(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def unchecked(*args: Any, **kwargs: Any) -> Any:
            self.paused += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.paused -= 1

        return unchecked


@contextlib.contextmanager
def no_host_syncs() -> Iterator[None]:
    """Within the block, any host work of the kinds the module docstring lists raises :class:`HostSyncError`.

    Run a forward once to warm it up (compiles, weight-derived caches), then again inside this
    block: that second call is what a CUDA graph would capture.

    The judged functions are replaced in ``torch`` and on ``torch.Tensor`` for the duration (process
    wide), so every call is seen wherever it is made: inside ``torch.library`` custom ops and other
    Python-implemented functions too, which a ``TorchFunctionMode`` would see only from the outside.
    Triton's interpreter is exempt while it runs a kernel (it copies the kernel's arguments to host
    memory and back: that is the simulated GPU at work, not the forward's host code).
    """
    check = _Check()
    patched = [(owner, name, getattr(owner, name)) for owner, name in CHECKED]
    try:
        from triton.runtime.interpreter import GridExecutor
    except ImportError:
        GridExecutor = None
    if GridExecutor is not None:
        patched.append((GridExecutor, "__call__", GridExecutor.__call__))
    try:
        for owner, name, original in patched:
            label = f"{'torch' if owner is torch else owner.__name__}.{name}"
            wrapper = check.exempt(original) if owner is GridExecutor else check.wrap(original, label)
            setattr(owner, name, wrapper)
        yield
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
