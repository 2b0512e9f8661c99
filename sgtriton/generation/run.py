"""``sgtriton generate``'s job: seeds (or projected ws) -> image files + manifest, on one process or many.

The job's samples are cut into batches in list order (:mod:`sgtriton.generation.sharding`); rank
``r`` of ``W`` generates the pending batches ``r, r + W, ...`` and hands each finished batch to the
:class:`~sgtriton.generation.writer.ImageWriter`, which encodes and writes the files in threads while
the next batch runs. Every rank takes part in one small all-reduce per round so that rank 0's
progress bar counts the images of the whole job. With ``resume``, each rank checks a share of the
existing files against the manifest first; only batches with a missing or corrupt file are
generated again, and only those files are rewritten (the whole batch is recomputed so that the
rewritten file has exactly the bytes of an uninterrupted run).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtriton.backends import resolve_impl
from sgtriton.generation import distributed, manifest, sharding
from sgtriton.generation.seeds import noise_generators, unique_in_order
from sgtriton.generation.writer import ImageWriter, decode, image_format
from sgtriton.images import make_grid, save_image, seed_to_z, to_uint8

#: Threads that encode and write files; PNG encoding of one 1024^2 image takes ~0.1 s on one core.
WRITER_THREADS = 4


class GenerationError(ValueError):
    """Bad job input: the message names the option, the value and what was expected."""


@dataclass(frozen=True)
class GenerationReport:
    written: int
    skipped: int
    seconds: float
    world_size: int


def compact_range(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``'0-2,5,7-8'`` (order kept: a job's order fixes its batches)."""
    parts: list[str] = []
    start = prev = None
    for v in values:
        if prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def _label(G, class_idx: int | None, device, warn: Callable[[str], None]) -> torch.Tensor:
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim:
        if class_idx is None:
            raise GenerationError("--class: required for a conditional network")
        if not 0 <= class_idx < G.c_dim:
            raise GenerationError(f"--class={class_idx}: expected 0 <= class < {G.c_dim}")
        label[:, class_idx] = 1
    elif class_idx is not None:
        warn("warning: --class is ignored for an unconditional network")
    return label


def run_generation(G, outdir: str | Path, *, seeds: Sequence[int] | None = None,
                   projected_ws: np.ndarray | None = None,
                   class_idx: int | None = None, truncation_psi: float | None = None,
                   truncation_cutoff: int | None = None, noise_mode: str = "const", batch_size: int = 1,
                   file_format: str = "png", resume: bool = False, grid: bool = True, cuda_graph: bool = False,
                   topology: distributed.Topology | None = None,
                   echo: Callable[[str], None] = print, warn: Callable[[str], None] = print,
                   show_progress: bool = True) -> GenerationReport:
    """Generate ``seeds`` (files ``seedNNNN.ext``) or the rows of ``projected_ws`` (``projNN.ext``)
    into ``outdir`` with a manifest; see the module docstring. ``topology`` (default: one process)
    says which share of the job is this process's; ``echo``/``warn`` are called on rank 0 only.
    ``cuda_graph`` replays the synthesis network from a :class:`~sgtriton.cuda_graph.CudaGraphSynthesis`
    (CUDA only; the same images)."""
    from tqdm import tqdm

    topology = topology or distributed.Topology(device=next(G.parameters()).device)
    if not topology.is_main:
        echo = warn = lambda message: None
    started = time.perf_counter()
    fmt = image_format(file_format)
    device = topology.device
    graphed = None
    if cuda_graph:
        from sgtriton import cuda_graph as graphs

        if torch.device(device).type != graphs.DEVICE_TYPE:
            raise GenerationError(f"--cuda-graph needs a CUDA device, got {device}")
        graphed = graphs.CudaGraphSynthesis(G.synthesis)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    impl = resolve_impl(G.backend, torch.device(device), G.synthesis.block_type.implementations)
    options: dict[str, Any] = {"noise_mode": noise_mode, "batch_size": batch_size, "format": fmt.name,
                               "impl": impl, "device_type": torch.device(device).type}
    if projected_ws is not None:
        ws = torch.as_tensor(projected_ws, device=device)
        items = list(range(ws.shape[0]))
        prefix, width, label = "proj", 2, None
        # The ws' bytes, not the file's path, identify them: a moved .npz resumes.
        options.update(projected_w_sha256=hashlib.sha256(np.ascontiguousarray(projected_ws).tobytes())
                       .hexdigest(), projected_w_shape=list(projected_ws.shape))
    else:
        if seeds is None:
            raise GenerationError("--seeds: required unless --projected-w is given")
        items, repeated = unique_in_order(seeds)
        if repeated:
            warn(f"warning: --seeds repeats {compact_range(sorted(set(repeated)))}; each seed is written once")
        ws = None
        prefix, width = "seed", 4
        label = _label(G, class_idx, device, warn)
        psi = G.config.truncation_psi if truncation_psi is None else truncation_psi
        cutoff = G.config.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
        options.update(seeds=compact_range(items), class_idx=class_idx, truncation_psi=psi,
                       truncation_cutoff=cutoff)
    header = manifest.make_header(manifest.network_identity(G), options)

    def file_name(item: int) -> str:
        return f"{prefix}{item:0{width}d}{fmt.extension}"

    layout = sharding.batches(items, batch_size)
    pending, kept = _pending_batches(outdir, header, layout, file_name, prefix, resume, topology, echo)
    my_batches = sharding.shard(pending, topology.rank, topology.world_size)
    to_write = sum(len(todo) for _, todo, _ in pending)

    # As always, grid.png is for seeds only, and for single-process runs only.
    keep_grid = grid and ws is None and not topology.distributed and len(items) > 1
    if grid and ws is None and topology.distributed:
        echo("note: grid.png is not written under torchrun (grids are for single-process runs)")
    arrays: dict[int, np.ndarray] = {}
    written: list[dict[str, Any]] = []
    kept_by_batch = {index: kept_entries for index, _, kept_entries in pending}

    def batch_done(index: int, images) -> None:
        entries = [manifest.entry(w.item, w.file, w.sha256, w.shape) for w in images]
        written.extend(entries)
        manifest.write_part(outdir, index, sorted(entries + kept_by_batch.get(index, []),
                                                  key=lambda e: e["seed"]))

    progress = tqdm(total=to_write, desc="generating", unit="img", disable=not (show_progress and topology.is_main))
    with progress, ImageWriter(outdir, fmt, workers=WRITER_THREADS, on_batch_done=batch_done) as writer:
        for step in range(sharding.steps(len(pending), topology.world_size)):
            count = 0
            if step < len(my_batches):
                index, todo, _ = my_batches[step]
                batch = layout[index]
                if ws is not None:
                    img = _synthesize(G, graphed, ws[batch], noise_mode, batch)
                else:
                    z = torch.cat([seed_to_z(s, G.z_dim) for s in batch]).to(device)
                    img = _synthesize(G, graphed, z, noise_mode, batch, label.repeat(len(batch), 1), psi, cutoff)
                todo_set = set(todo)
                images = [(item, file_name(item), array) for item, array in zip(batch, to_uint8(img), strict=True)]
                writer.submit(index, [x for x in images if x[0] in todo_set])
                if keep_grid:
                    arrays.update((item, array) for item, _, array in images)
                count = len(todo)
            progress.update(distributed.sum_over_ranks(topology, count))

    # Every rank's entries, kept and new, make the final manifest (no shared file system needed for it).
    everything = [e for share in distributed.all_gather(topology, (written, kept)) for group in share for e in group]
    if topology.is_main:
        by_seed = {e["seed"]: e for e in everything}
        manifest.finish_job(outdir, header, [by_seed[i] for i in items if i in by_seed])
        if keep_grid:
            for item in items:
                if item not in arrays:  # skipped by --resume: read back (exact for png, webp and npz)
                    arrays[item] = decode((outdir / file_name(item)).read_bytes(), fmt)
            save_image(make_grid([arrays[i] for i in items]), outdir / "grid.png")
    distributed.barrier(topology)
    report = GenerationReport(to_write, len(items) - to_write, time.perf_counter() - started, topology.world_size)
    ranks = f" on {topology.world_size} ranks" if topology.distributed else ""
    skipped = f", kept {report.skipped} verified file(s)" if resume else ""
    echo(f"wrote {report.written} image(s) to {outdir}{ranks}{skipped} in {report.seconds:.1f} s")
    return report


def _synthesize(G, graphed, latents: torch.Tensor, noise_mode: str, seeds: Sequence[int], label=None, psi=None,
                cutoff=None) -> torch.Tensor:
    """One batch: ``G(z, label, psi, cutoff)`` for z, ``G.synthesis(ws)`` for projected ws; random
    noise drawn per sample from its seed's generator. With ``graphed`` (a
    :class:`~sgtriton.cuda_graph.CudaGraphSynthesis`) the synthesis network is replayed from it,
    after the mapping for z (``G(z, ...)`` is ``G.synthesis(G.mapping(z, ...))``)."""
    def forward():
        if graphed is None:
            if label is None:
                return G.synthesis(latents, noise_mode=noise_mode)
            return G(latents, label, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode=noise_mode)
        ws = latents if label is None else G.mapping(latents, label, truncation_psi=psi, truncation_cutoff=cutoff)
        return graphed(ws, noise_mode=noise_mode)

    if noise_mode != "random":
        return forward()
    from sgtriton.blocks.layers import per_sample_noise

    with per_sample_noise(noise_generators(seeds)):
        return forward()


def _pending_batches(outdir: Path, header: dict[str, Any], layout: list[list[int]],
                     file_name: Callable[[int], str], prefix: str, resume: bool, topology: distributed.Topology,
                     echo: Callable[[str], None]) -> tuple[list[tuple[int, list[int]]], list[dict[str, Any]]]:
    """``[(batch index, items to write, entries kept in that batch)]`` for the whole job (the same
    list on every rank) and this rank's share of all the entries that ``--resume`` keeps."""
    everything = [(index, list(batch), []) for index, batch in enumerate(layout)]
    recorded_header, recorded = (manifest.read_manifest(outdir) if resume else (None, {}))
    if resume and recorded_header is not None:
        manifest.check_same_job(outdir, recorded_header, header)
    elif resume:
        echo(f"--resume: {outdir} has no manifest yet; generating every image")
    if topology.is_main:
        manifest.start_job(outdir, header, fresh=recorded_header is None, file_prefix=prefix)
    distributed.barrier(topology)
    if recorded_header is None:
        return everything, []

    pending, kept = [], []
    for index, batch, _ in sharding.shard(everything, topology.rank, topology.world_size):
        todo, kept_here = [], []
        for item in batch:
            if manifest.file_matches(outdir, recorded.get(item), file_name(item)):
                kept_here.append(recorded[item])
            else:
                todo.append(item)
        kept.extend(kept_here)
        if todo:
            pending.append((index, todo, kept_here))
    pending = sorted((p for share in distributed.all_gather(topology, pending) for p in share), key=lambda p: p[0])
    return pending, kept
