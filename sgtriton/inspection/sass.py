"""Reading a kernel's speed off its SASS: loops, the main loop, instructions and MMAs per iteration.

Input is ``cuobjdump -sass`` text of one kernel: one instruction per line,
``/*0430*/  @!P1 LDGSTS.E.BYPASS.128 [R3], desc[UR8][R4.64], P0 ;``. From it:

* **loops** -- every backward branch (``BRA``/``JMP`` to an address at or before its own; a
  branch to itself, the trap after ``EXIT``, is not a loop) closes a loop spanning the target to
  the branch; back edges to the same head merge into one loop;
* the **main loop** -- the innermost loop holding tensor-core instructions (the one with the most
  of them if several); in a kernel without MMAs, the largest innermost loop (most instructions);
* per main-loop iteration: the instructions (``NOP`` padding excluded), the MMA instructions by
  opcode (``HGMMA.64x64x16.F32``: shape and accumulator/input types), and the global-memory
  accesses by kind and width (``LDG.E.128`` = 16 bytes, ``LDG.E.U16`` = 2, ``LDGSTS.E`` = 4);
* the instructions in *other* loops (loops that neither hold nor sit inside the main loop, counted
  at their outermost level) and the instructions *outside* every loop.

An instruction count is what one warp issues for one pass through the code range; forward
branches inside a range (skipped code) are not followed, so counts are upper bounds where a
branch skips work. ``HGMMA`` (wgmma) is issued by the four warps of a warpgroup together and
computes its full ``M x N x K`` shape once per warpgroup; ``HMMA``/``IMMA`` (mma.sync) compute their
shape once per warp.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(?:(@!?U?P[T0-9]+)\s+)?([A-Z][A-Za-z0-9_.]*)\s*([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+|\.L\w+):")
_BRANCH_TARGET = re.compile(r"(?:`\((\.L\w+)\)|(0x[0-9a-fA-F]+)\b)")
_BRANCHES = ("BRA", "JMP")
#: Opcode bases of global-memory accesses whose width is summarised.
_GLOBAL_ACCESSES = ("LDG", "STG", "LDGSTS", "ATOMG", "RED", "LD", "ST")
_TMA = ("UTMALDG", "UTMASTG", "UBLKCP", "UTMAPF")
_MMA_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
#: mma.sync shapes as SASS writes them (``HMMA.16816`` = m16 n8 k16).
_SYNC_SHAPES = {"16816": (16, 8, 16), "1688": (16, 8, 8), "884": (8, 8, 4), "16832": (16, 8, 32),
                "8816": (8, 8, 16), "8832": (8, 8, 32)}


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str
    operands: str
    predicate: str = ""

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


@dataclass(frozen=True)
class Loop:
    """Instructions ``start`` .. ``end`` (addresses, inclusive; ``end`` is the backward branch)."""

    start: int
    end: int

    def contains(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and self != other


@dataclass
class SassStats:
    """What one kernel's SASS says about its speed (see the module docstring)."""

    instructions: int = 0
    loops: list[tuple[int, int]] = field(default_factory=list)
    main_loop: tuple[int, int] | None = None
    loop_instructions: int = 0
    loop_mma: dict[str, int] = field(default_factory=dict)
    loop_global: dict[str, int] = field(default_factory=dict)
    other_loop_instructions: int = 0
    outside_instructions: int = 0
    kernel_mma: dict[str, int] = field(default_factory=dict)
    kernel_global: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SassStats:
        values = dict(data)
        values["loops"] = [tuple(loop) for loop in values.get("loops", [])]
        if values.get("main_loop") is not None:
            values["main_loop"] = tuple(values["main_loop"])
        return cls(**values)


def parse_instructions(sass: str) -> list[Instruction]:
    """The instructions of ``cuobjdump -sass`` text in address order (``NOP`` padding dropped);
    branch operands to ``.L_x_N`` labels are rewritten to the labels' addresses."""
    found: list[Instruction] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        address = int(match.group(1), 16)
        for name in pending:
            labels[name] = address
        pending = []
        opcode = match.group(3)
        if opcode == "NOP":
            continue
        found.append(Instruction(address, opcode, match.group(4).strip(), match.group(2) or ""))
    if labels:
        found = [Instruction(i.address, i.opcode, _resolve_labels(i.operands, labels), i.predicate)
                 if i.base in _BRANCHES else i for i in found]
    return found


def _resolve_labels(operands: str, labels: dict[str, int]) -> str:
    return re.sub(r"`\((\.L\w+)\)", lambda m: hex(labels[m.group(1)]) if m.group(1) in labels else m.group(0),
                  operands)


def branch_target(instruction: Instruction) -> int | None:
    """The address a ``BRA``/``JMP`` jumps to, or ``None`` (not a branch, or an indirect one)."""
    if instruction.base not in _BRANCHES:
        return None
    match = _BRANCH_TARGET.search(instruction.operands)
    if match is None or match.group(2) is None:
        return None
    return int(match.group(2), 16)


def find_loops(instructions: list[Instruction]) -> list[Loop]:
    """Loops closed by backward branches, one per loop head (the farthest back edge), by start."""
    ends: dict[int, int] = {}
    for instruction in instructions:
        target = branch_target(instruction)
        if target is not None and target < instruction.address:
            ends[target] = max(ends.get(target, 0), instruction.address)
    return sorted((Loop(start, end) for start, end in ends.items()), key=lambda loop: (loop.start, -loop.end))


def is_mma(opcode: str) -> bool:
    """Tensor-core instruction: its base ends in ``MMA`` (``HMMA``, ``HGMMA``, ``IMMA``, ``QGMMA``),
    not ``HFMA2.MMA`` (an FMA issued on another pipe)."""
    return opcode.split(".")[0].endswith("MMA")


def mma_shape(opcode: str) -> tuple[int, int, int] | None:
    """``(M, N, K)`` of one MMA instruction: ``HGMMA.64x64x16.F32`` -> (64, 64, 16),
    ``HMMA.16816.F32`` -> (16, 8, 16)."""
    parts = opcode.split(".")
    if len(parts) < 2:
        return None
    wide = _MMA_SHAPE.match(parts[1])
    if wide:
        return int(wide.group(1)), int(wide.group(2)), int(wide.group(3))
    return _SYNC_SHAPES.get(parts[1])


def mma_flops(opcode: str) -> int:
    """FLOPs one MMA instruction computes (``2 M N K``) for its scope (:func:`mma_per_warpgroup`)."""
    shape = mma_shape(opcode)
    return 0 if shape is None else 2 * shape[0] * shape[1] * shape[2]


def mma_per_warpgroup(opcode: str) -> bool:
    """``HGMMA``/``QGMMA``/``IGMMA`` (wgmma): one shape per warpgroup of 4 warps; others: per warp."""
    return opcode.split(".")[0].endswith("GMMA")


def mma_input(opcode: str) -> str:
    """The MMA's input type, for its tensor-core rate: ``tf32``, ``fp8``, ``int8`` or ``fp16`` (fp16/bf16)."""
    parts = opcode.split(".")
    if "TF32" in parts:
        return "tf32"
    if parts[0] == "QGMMA" or any(p in ("E4M3", "E5M2") for p in parts):
        return "fp8"
    if parts[0] in ("IMMA", "IGMMA"):
        return "int8"
    return "fp16"


def access_width(instruction: Instruction) -> int:
    """Bytes per thread of a memory access: ``.128`` 16, ``.64`` 8, ``.U16``/``.S16`` 2, ``.U8``/``.S8`` 1, else 4."""
    parts = set(instruction.opcode.split(".")[1:])
    for suffix, width in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if suffix in parts:
            return width
    return 4


def _global_key(instruction: Instruction) -> str | None:
    if instruction.base in _TMA:
        return instruction.base
    if instruction.base in _GLOBAL_ACCESSES:
        return f"{instruction.base}.{access_width(instruction)}B"
    return None


def _count(instructions: list[Instruction]) -> tuple[dict[str, int], dict[str, int]]:
    mma: dict[str, int] = {}
    memory: dict[str, int] = {}
    for instruction in instructions:
        if is_mma(instruction.opcode):
            mma[instruction.opcode] = mma.get(instruction.opcode, 0) + 1
        key = _global_key(instruction)
        if key is not None:
            memory[key] = memory.get(key, 0) + 1
    return dict(sorted(mma.items())), dict(sorted(memory.items()))


def _inside(instructions: list[Instruction], loop: Loop) -> list[Instruction]:
    return [i for i in instructions if loop.start <= i.address <= loop.end]


def choose_main_loop(instructions: list[Instruction], loops: list[Loop]) -> Loop | None:
    """The innermost loop holding MMAs (most MMAs first), else the largest innermost loop."""
    if not loops:
        return None
    sizes = {loop: _inside(instructions, loop) for loop in loops}
    mma_loops = [loop for loop in loops if any(is_mma(i.opcode) for i in sizes[loop])]
    if mma_loops:
        innermost = [loop for loop in mma_loops if not any(loop.contains(other) for other in mma_loops)]
        return max(innermost, key=lambda loop: (sum(is_mma(i.opcode) for i in sizes[loop]), len(sizes[loop])))
    innermost = [loop for loop in loops if not any(loop.contains(other) for other in loops)]
    return max(innermost, key=lambda loop: len(sizes[loop]))


def sass_stats(sass: str) -> SassStats:
    """:class:`SassStats` of one kernel's ``cuobjdump -sass`` text."""
    instructions = parse_instructions(sass)
    loops = find_loops(instructions)
    main = choose_main_loop(instructions, loops)
    stats = SassStats(instructions=len(instructions), loops=[(loop.start, loop.end) for loop in loops])
    stats.kernel_mma, stats.kernel_global = _count(instructions)
    if main is None:
        stats.outside_instructions = len(instructions)
        return stats
    body = _inside(instructions, main)
    stats.main_loop = (main.start, main.end)
    stats.loop_instructions = len(body)
    stats.loop_mma, stats.loop_global = _count(body)
    # Other loops: those disjoint from the main loop, at their outermost level.
    others = [loop for loop in loops if loop != main and not loop.contains(main) and not main.contains(loop)]
    outermost = [loop for loop in others if not any(other.contains(loop) for other in others)]
    in_other = {i.address for loop in outermost for i in _inside(instructions, loop)}
    stats.other_loop_instructions = len(in_other)
    stats.outside_instructions = len(instructions) - len(body) - len(in_other)
    return stats


def format_widths(counts: dict[str, int]) -> str:
    """``{'LDG.16B': 4, 'LDGSTS.4B': 51}`` -> ``'LDG 16B x4, LDGSTS 4B x51'`` (``-`` when empty)."""
    if not counts:
        return "-"
    return ", ".join(f"{key.replace('.', ' ')} x{count}" for key, count in counts.items())


__all__ = ["Instruction", "Loop", "SassStats", "access_width", "branch_target", "choose_main_loop", "find_loops",
           "format_widths", "is_mma", "mma_flops", "mma_input", "mma_per_warpgroup", "mma_shape",
           "parse_instructions", "sass_stats"]
