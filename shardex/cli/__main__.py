"""``python -m shardex.cli``: what the ``shardex`` script runs (supervised children use it)."""

import sys

from shardex.cli import main

sys.exit(main())
