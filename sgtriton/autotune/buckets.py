"""Shape buckets: the launch key a launcher passes, reduced to the class of shapes one tuning covers.

A launcher asks for its config with ``launch_config(SPEC, key)``. The key is a tuple of
``(field, value)`` pairs, for example::

    key = (("dtype", "fp16"), ("batch", N), ("spatial", H * W), ("cin", C_in), ("cout", C_out), ("up", 2))

:func:`bucket_key` keeps every field exact except those named in :data:`ROUNDED_FIELDS`, which are
rounded up to the next power of two -- batch and spatial sizes change the work per kernel
smoothly, so one tuning covers ``[2^(k-1), 2^k]``; channel counts, dtype and flags change the
kernel's shape of work, so they are kept exact. A kernel may override this with a callable in
``spec.extra["bucket_key"]`` (``(key) -> bucket``).

A plain positional tuple (``("fp16", True, 4096)``) is accepted too: its integers are rounded up
to powers of two (``bool`` kept exact) and everything else is kept -- use named pairs whenever a
field (such as a channel count) must stay exact.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

#: Fields rounded up to the next power of two (everything else is kept exact).
ROUNDED_FIELDS = frozenset({"batch", "spatial", "h", "w", "rows", "inner", "elements", "numel"})

#: A bucket: ``(field, value)`` pairs for named keys, plain values for positional keys.
Bucket = tuple[Any, ...]


def next_power_of_two(n: int) -> int:
    """Smallest power of two ``>= n`` (``1`` for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_named_pair(item: object) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def bucket_key(spec: Any, key: Hashable) -> Bucket:
    """The bucket of launch ``key`` for kernel ``spec`` (see the module docstring for the rules)."""
    custom = getattr(spec, "extra", {}).get("bucket_key")
    if custom is not None:
        bucket = custom(key)
        return bucket if isinstance(bucket, tuple) else (bucket,)
    items = key if isinstance(key, tuple) else (key,)
    if items and all(_is_named_pair(item) for item in items):
        return tuple(
            (field, next_power_of_two(value) if field in ROUNDED_FIELDS and _is_count(value) else value)
            for field, value in items
        )
    return tuple(next_power_of_two(value) if _is_count(value) else value for value in items)


def bucket_label(bucket: Bucket) -> str:
    """A stable text form of a bucket, used as the cache and table key: ``dtype=fp16,batch=8,...``."""
    parts = []
    for item in bucket:
        if _is_named_pair(item):
            parts.append(f"{item[0]}={_text(item[1])}")
        else:
            parts.append(_text(item))
    return ",".join(parts)


def bucket_dtype(bucket: Bucket) -> str | None:
    """The ``dtype`` field of a bucket (``'fp16'``), or the first dtype-looking value, else ``None``."""
    for item in bucket:
        if _is_named_pair(item) and item[0] == "dtype":
            return str(item[1])
    for item in bucket:
        if isinstance(item, str) and item in {"fp16", "fp32", "bf16", "fp64"}:
            return item
    return None


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
