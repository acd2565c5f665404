"""The deterministic simulator of the whole cluster (issue: virtual time, seeded faults,
invariants, replay and shrinking). See docs/simulator.md."""
