"""``python -m sgtriton`` runs the command line (so ``torchrun -m sgtriton generate ...`` works)."""

from sgtriton.cli import main

main(prog_name="sgtriton")
