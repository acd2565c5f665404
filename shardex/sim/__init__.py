"""The deterministic simulator's parts (issue "simulator"): simulated stores, disks and the
scheduler that runs a whole cluster in one process on a virtual clock."""
