"""Helpers shared by the test files (a test file never imports another test file).

- ``ports``: free ports and layouts, per pytest-xdist worker disjoint and below the kernel's
  ephemeral range;
- ``wait``: ``wait_until`` -- wait on progress with a deadline instead of sleeping;
- ``cluster``: ``shardex up`` as a fixture-friendly ``Cluster``; ``redis``: a real Redis server;
- the rest: stand-ins and helpers of one area each (fake shards, the reference matcher, ...).
"""
