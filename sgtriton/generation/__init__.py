"""Generation at scale: deterministic sharding over ``torchrun`` ranks, a resumable manifest, and
image encoding off the critical path.

Reusable pieces for any job that turns a list of items into files (``generate`` today; projection
of a folder of targets can use the same): :func:`~sgtriton.generation.sharding.shard` and
:func:`~sgtriton.generation.sharding.batches`, :mod:`~sgtriton.generation.manifest`,
:class:`~sgtriton.generation.writer.ImageWriter` and :func:`~sgtriton.generation.distributed.session`.
Importing this package imports neither torch nor numpy; :mod:`~sgtriton.generation.run` does.
"""

from sgtriton.generation.sharding import batches, shard, steps

__all__ = ["batches", "shard", "steps"]
