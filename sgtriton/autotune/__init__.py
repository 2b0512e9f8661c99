"""Persistent autotuning: per-device tuned kernel configs that survive restarts and never block start-up.

* :mod:`~sgtriton.autotune.buckets` -- launch key -> shape bucket (batch/spatial to powers of two).
* :mod:`~sgtriton.autotune.environment` -- GPU, compute capability, versions, kernel source hash.
* :mod:`~sgtriton.autotune.cache` -- the JSON cache per GPU under ``$SGTRITON_CACHE_DIR``.
* :mod:`~sgtriton.autotune.tables` -- tuned tables shipped per GPU family.
* :mod:`~sgtriton.autotune.pruning` -- configs the compile report rejects.
* :mod:`~sgtriton.autotune.tuner` -- benchmark every config of every kernel a call launches.
* :mod:`~sgtriton.autotune.policy` -- ``SGTRITON_AUTOTUNE=off|cached|full`` as the config selector.
* :mod:`~sgtriton.autotune.warmup` -- run a generator ahead of time (compile; with ``full``, tune).
* :mod:`~sgtriton.autotune.commands` -- ``sgtriton autotune``.
"""

from sgtriton.autotune.buckets import ROUNDED_FIELDS, bucket_key, bucket_label
from sgtriton.autotune.cache import CacheEntry, TuningCache, TuningCacheWarning, clear_cache
from sgtriton.autotune.environment import Environment, current_environment, source_hash
from sgtriton.autotune.policy import (
    AUTOTUNE_ENV,
    POLICIES,
    ConfigPolicy,
    install,
    installed_policy,
    resolve_policy,
    uninstall,
)
from sgtriton.autotune.pruning import Pruner, default_pruner, reject_by_compile_results
from sgtriton.autotune.tuner import Benchmarker, TuneResult, format_results, gpu_benchmarker, tune_call
from sgtriton.autotune.warmup import WarmupReport, warmup
from sgtriton.ops._runtime import CACHE_ENV

__all__ = [
    "AUTOTUNE_ENV",
    "CACHE_ENV",
    "POLICIES",
    "ROUNDED_FIELDS",
    "Benchmarker",
    "CacheEntry",
    "ConfigPolicy",
    "Environment",
    "Pruner",
    "TuneResult",
    "TuningCache",
    "TuningCacheWarning",
    "WarmupReport",
    "bucket_key",
    "bucket_label",
    "clear_cache",
    "current_environment",
    "default_pruner",
    "format_results",
    "gpu_benchmarker",
    "install",
    "installed_policy",
    "reject_by_compile_results",
    "resolve_policy",
    "source_hash",
    "tune_call",
    "uninstall",
    "warmup",
]
