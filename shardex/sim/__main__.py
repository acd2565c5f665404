"""``python -m shardex.sim``: see ``shardex.sim.cli``."""

from shardex.sim.cli import main

if __name__ == "__main__":
    main(prog_name="python -m shardex.sim")
