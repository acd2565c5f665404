"""``python -m shardex.sim``: see ``shardex.sim.cli``.

A run must be the same run in every process: the iteration order of sets of strings follows
the interpreter's hash seed, so without ``PYTHONHASHSEED`` in the environment the command
starts itself again with ``PYTHONHASHSEED=0`` (the seed its replay lines name)."""

import os
import sys

from shardex.sim.cli import main

if __name__ == "__main__":
    if "PYTHONHASHSEED" not in os.environ:
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "shardex.sim", *sys.argv[1:]])
    main(prog_name="python -m shardex.sim")
