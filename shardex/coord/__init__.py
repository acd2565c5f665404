"""Coordination behind one small interface: who leads each replicated shard (a lease with an
epoch as fencing token), who may take over (the in-sync set), where each epoch started, and the
placement map with a version check.

Two implementations of the same contract (``base.LeaseStore``, ``placement.store.Store``):

- Redis (``redisstore``): the embedded default, Lua scripts on one Redis.
- etcd (``etcd``): the production option, a 3- or 5-member etcd cluster; the URL
  ``etcd://host:port,host:port`` wherever a lease's Redis URL is taken selects it
  (``connect.connect``).

docs/coordination.md says what each guarantees.
"""
