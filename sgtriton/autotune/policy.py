"""The autotune policy: which config a launch gets, and whether anything is ever benchmarked.

``SGTRITON_AUTOTUNE`` (or the ``policy`` argument) is one of:

========  ==========================================================================================
``off``     the shipped table for this GPU family, else the kernel's default config; never reads
            the user cache, never benchmarks.
``cached``  (default) the user cache, else the table, else the default. Never benchmarks, so
            start-up never waits for tuning.
``full``    like ``cached`` for every launch, and it remembers what was missing;
            :func:`~sgtriton.autotune.warmup.warmup` (``G.warmup``) and ``sgtriton autotune``
            tune the missing (kernel, bucket) pairs and store them. A launch itself never blocks
            on tuning: a running launch cannot re-run itself with other configs.
========  ==========================================================================================

:func:`install` makes a :class:`ConfigPolicy` the config selector of
:func:`sgtriton.ops._runtime.launch_config`. Under Triton's interpreter selectors are not asked:
only default configs run there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from sgtriton.autotune.buckets import bucket_key, bucket_label
from sgtriton.autotune.cache import CacheEntry, TuningCache, config_from_json
from sgtriton.autotune.environment import Environment, current_environment, source_hash
from sgtriton.autotune.tables import table_config
from sgtriton.ops._runtime import KernelConfig, KernelSpec, set_config_selector

AUTOTUNE_ENV = "SGTRITON_AUTOTUNE"
POLICIES = ("off", "cached", "full")
DEFAULT_POLICY = "cached"

log = logging.getLogger("sgtriton.autotune")


def resolve_policy(policy: str | None = None) -> str:
    """``policy`` if given, else ``$SGTRITON_AUTOTUNE``, else ``'cached'``; checked against :data:`POLICIES`."""
    name = "policy" if policy is not None else AUTOTUNE_ENV
    value = policy if policy is not None else os.environ.get(AUTOTUNE_ENV, DEFAULT_POLICY)
    if not isinstance(value, str) or value.strip().lower() not in POLICIES:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(POLICIES)}")
    return value.strip().lower()


@dataclass(frozen=True)
class Choice:
    """The config chosen for a (kernel, bucket) and where it came from."""

    config: KernelConfig
    source: Literal["cache", "table", "default"]
    entry: CacheEntry | None = None


def lookup_config(spec: KernelSpec, bucket: str, environment: Environment | None, cache: TuningCache | None,
                  policy: str = DEFAULT_POLICY, use_tables: bool = True) -> Choice:
    """The config ``policy`` gives ``spec`` for ``bucket``: cache (unless ``off``), then table, then default."""
    if environment is not None:
        if policy != "off" and cache is not None:
            entry = cache.lookup(spec.name, source_hash(spec), bucket)
            config = config_from_json(spec, entry.config) if entry is not None else None
            if config is not None:
                return Choice(config, "cache", entry)
        config = table_config(spec, bucket, environment.family) if use_tables else None
        if config is not None:
            return Choice(config, "table")
    return Choice(spec.default_config, "default")


class ConfigPolicy:
    """A config selector implementing one policy (see the module docstring).

    ``environment='auto'`` reads the current CUDA device at the first launch on it; tests pass an
    :class:`Environment` (or ``None``: no GPU, always the default). ``cache_root`` overrides
    ``$SGTRITON_CACHE_DIR``. Choices are memoised per launch key; a cache update invalidates them.
    """

    def __init__(self, policy: str | None = None, *, cache_root: str | os.PathLike[str] | None = None,
                 environment: Environment | None | Literal["auto"] = "auto", use_tables: bool = True) -> None:
        self.policy = resolve_policy(policy)
        self.cache_root = cache_root
        self.use_tables = use_tables
        self._fixed_environment = environment
        self._environments: dict[int, Environment | None] = {}
        self._caches: dict[Environment, TuningCache] = {}
        self._generations: dict[Environment, int] = {}
        self._memo: dict[tuple[Any, str, Hashable], KernelConfig | None] = {}
        #: ``(kernel, bucket) -> a launch key`` seen without a cache entry (recorded under ``full``).
        self.missing: dict[tuple[str, str], Hashable] = {}
        self._told_missing = False

    def __repr__(self) -> str:
        return f"ConfigPolicy({self.policy!r})"

    def environment(self) -> Environment | None:
        """The environment of the current device (``None`` without a GPU)."""
        if self._fixed_environment != "auto":
            return self._fixed_environment  # type: ignore[return-value]
        import torch

        index = torch.cuda.current_device() if torch.cuda.is_available() else -1
        if index not in self._environments:
            self._environments[index] = current_environment(index) if index >= 0 else None
        return self._environments[index]

    def cache(self, environment: Environment | None = None) -> TuningCache | None:
        """The tuning cache of ``environment`` (default: the current one); ``None`` without a GPU."""
        environment = environment or self.environment()
        if environment is None:
            return None
        if environment not in self._caches:
            self._caches[environment] = TuningCache(environment, self.cache_root)
        return self._caches[environment]

    def choose(self, spec: KernelSpec, bucket: str) -> Choice:
        """The choice for ``spec`` at ``bucket`` under this policy (not memoised)."""
        environment = self.environment()
        cache = self.cache(environment) if self.policy != "off" else None
        return lookup_config(spec, bucket, environment, cache, self.policy, self.use_tables)

    def __call__(self, spec: KernelSpec, key: Hashable) -> KernelConfig | None:
        environment = self.environment()
        if environment is None:
            return None
        cache = self.cache(environment)
        if cache is not None and self._generations.get(environment) != cache.generation:
            self._memo = {k: v for k, v in self._memo.items() if k[0] != environment}
            self._generations[environment] = cache.generation
        memo_key = (environment, spec.name, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        label = bucket_label(bucket_key(spec, key))
        choice = lookup_config(spec, label, environment, cache if self.policy != "off" else None,
                               self.policy, self.use_tables)
        if self.policy == "full" and choice.source != "cache":
            self.missing.setdefault((spec.name, label), key)
            if not self._told_missing:
                self._told_missing = True
                log.info("SGTRITON_AUTOTUNE=full: %s at %s is not tuned yet; running it with its %s config. "
                         "Call G.warmup(...) or `sgtriton autotune` to tune.", spec.name, label, choice.source)
        config = None if choice.source == "default" else choice.config
        self._memo[memo_key] = config
        return config


_installed: ConfigPolicy | None = None


def install(policy: str | ConfigPolicy | None = None, **kwargs: Any) -> ConfigPolicy:
    """Make ``policy`` (a name, default ``$SGTRITON_AUTOTUNE``, or a :class:`ConfigPolicy`) the config selector.

    Cheap: no file is read and no device is touched until the first kernel launch.
    """
    global _installed
    selector = policy if isinstance(policy, ConfigPolicy) else ConfigPolicy(policy, **kwargs)
    set_config_selector(selector)
    _installed = selector
    return selector


def uninstall() -> None:
    """Remove the installed policy; launchers use their default configs again."""
    global _installed
    set_config_selector(None)
    _installed = None


def installed_policy() -> ConfigPolicy | None:
    """The policy :func:`install` last installed (``None`` if none is)."""
    return _installed
