"""The processes: each module is one OS process, a thin loop around a pure core.

``router``, ``shard`` and ``bridge`` are the cluster; ``supervisor`` starts them all (``shardex
up``) and ``honcho`` helps the Procfile.
"""
