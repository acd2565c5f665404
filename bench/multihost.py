"""The multi-host rehearsal: a full cluster over four network namespaces ("hosts"), one host
cut off under load and healed; prints failover time, lost / duplicated orders, fencing, the
bridge's stream and the audit.

Needs root (``ip netns``, ``tc``) and redis-server. Hosts, placement and ports:
``tests/support/multihost.py``; addresses in 10.38.X.0/24 on a bridge made for the run.
Every process is started only with explicit endpoints (``tcp://10.38.X.K:PORT``) and its own
name; nothing is shared between hosts but the network (each host has its own data dir).
Namespaces, veths, the bridge and every process are removed at the end, also on Ctrl-C.

Engine failover: the cut → the first answer, through the router, to a status question asked
after the cut, from the new leader. Lost: probe orders acknowledged ("held and forwarded" by
the account shard) that are not in the engine leader's journal at the end; duplicated: order
ids journaled more than once. Fencing: the last time the cut-off leader answered a status
question as leader, asked from its own host (it must stop before the standby takes over).
Every number: docs/multihost.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.multihost import Plan, Rehearsal  # noqa: E402
from tests.support.netns import netns_unavailable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=float, default=3.0, help="seconds of load before the cut")
    ap.add_argument("--cut", type=float, default=5.0, help="seconds the host stays cut off")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after the heal")
    ap.add_argument("--rate", type=float, default=100.0, help="probe orders/s (tracked by id)")
    ap.add_argument("--loadgen-rate", type=float, default=200.0,
                    help="shardex loadgen orders/s from the client host too (0: none)")  # fmt: skip
    ap.add_argument("--coord", choices=["redis", "etcd"], default="redis",
                    help="where the leases live: the Redis on h1, or a 3-member etcd with a "
                    "member on each of h1, h2, h3 (the cut host's member goes with it)")
    ap.add_argument("--no-pre-vote", action="store_true",
                    help="with --coord etcd: run etcd without --pre-vote (3.4's default)")
    ap.add_argument("--etcd-leader", default="h1", choices=["h1", "h2", "h3", "any"],
                    help="with --coord etcd: move etcd's own leader to this host before the cut "
                    "(any: leave it where etcd's election put it; on h2 the cut takes it away, "
                    "and every lease waits out etcd's election)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, journals)")
    args = ap.parse_args()
    why = netns_unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # (cleaned up as on Ctrl-C)
    work = Path(tempfile.mkdtemp(prefix="shardex-multihost-"))
    reh = None
    try:
        reh = Rehearsal(work, args.coord, pre_vote=not args.no_pre_vote)
        reh.start()
        leader = None if args.etcd_leader == "any" else args.etcd_leader
        out = reh.run(Plan(args.before, args.cut, args.after, args.rate, args.loadgen_rate,
                           etcd_leader=leader))
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        if reh is not None:
            reh.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out.numbers))
    else:
        print(out.status_text)
        for key, value in out.numbers.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
