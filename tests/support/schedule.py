"""The order the suite's files run in, for pytest-xdist's ``worksteal`` (tests/run.sh).

``worksteal`` hands each of the N workers one contiguous slice of the collected tests (the
first ``n // N`` to the first worker, and so on), then lets an idle worker take the back half
of the longest queue. Sorting the longest files first put all of them in the first slice: one
worker ran them back to back while the others ran short ones, and the long files' tests were
stolen one by one from its queue's end, each steal starting that file's module cluster again
on the thief. Here each slice gets an even share of the measured work instead, its longest
files first (so a steal, from the back of a queue, takes short ones), and a file stays whole
within its slice where the counts allow.

Pure: names, test counts and seconds in, an order out (``tests/unit/test_schedule.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Seconds of one worker per file, measured 2026-12-07 (tests/run.sh, 3 workers, the box
# shared: load 7-10), for the files of 20 s or more; the files made cheaper later that day (two
# passes) scaled by their own CPU before/after, run alone (docs/test-suite.md). Only the
# proportions matter; a file not listed counts DEFAULT_S per test. The simulator's two big
# files scaled from their CPU alone (35 s and 14 s) like the others.
MEASURED_S: dict[str, float] = {
    # the lease ttl option and renewal accounting (2026-12-07 21:10, load ~13): 0.3 s of
    # pytest, 3.2 s CPU with start-up (pure parts and click, no process)
    "test_leasetime.py": 0.5,
    # a promoted standby renews from the take (2026-12-07 23:10): 0.8 s of pytest (threads
    # renewing every 56 ms, a simulated store)
    "test_lease_promotion.py": 0.8,
    # the lease keeper's decisions in-process (2026-12-08 02:50, load ~12): 2.1 s of pytest
    # (a simulated store, threads handing over every 56 ms); its processes, the chaos tier:
    # 9 s (three holders, each with a keeper process, and a Redis)
    "test_leasekeeper.py": 2.1,
    "test_lease_keeper.py": 9.0,
    # a request of orders (and a link read of settlements) with the machine's rings filled
    # once (2026-12-07 23:30): 2.1 s with an in-process cluster
    "test_account_order_batch.py": 2.2,
    # a cancel read before its order's forward, parked until the link's MARK answer
    # (2026-12-08 00:12): 0.8 s of pytest, three in-process clusters (one waits out a 0.3 s
    # parking deadline) and the pure queue
    "test_inproc_cancel_race.py": 1.0,
    # a deposed leader's late link messages refused by their epoch (2026-12-08 03:07, load
    # ~8): 1.2 s of pytest, two replicated in-process clusters in virtual time
    "test_inproc_link_epoch.py": 1.3,
    # bench/overload.py's CPU per order from /proc (2026-12-08 00:05): 0.4 s of pytest (50 ms
    # of it burnt on purpose)
    "test_bench_overload_cpu.py": 0.4,
    "test_accounts_attack.py": 111, "test_bridge.py": 58, "test_engine_compiled.py": 75,
    "test_bridge_kills.py": 72, "test_loadgen_failover.py": 15,
    "test_chaos.py": 103, "test_cli.py": 49, "test_hostile.py": 39,
    "test_bench_smoke.py": 51, "test_accounts_core.py": 27, "test_diskfull.py": 76,
    "test_fuzz.py": 47, "test_client_decoders.py": 42, "test_observability.py": 47,
    "test_failover.py": 58, "test_engine_props.py": 58, "test_failover_accounts.py": 54,
    # (test_bridge_account_failover.py: 44, and 12 s for its ``[etcd]`` run added 2026-12-08)
    "test_cluster.py": 31, "test_loadgen.py": 28, "test_bridge_account_failover.py": 56,
    "test_datadir.py": 44, "test_accounts_money.py": 22, "test_journal_tools.py": 29,
    "test_accounts_money_kills.py": 20,
    "test_failover_secure.py": 40, "test_shardcount.py": 40, "test_redis_acl.py": 39,
    "test_identity.py": 24, "test_accounts_edges.py": 25, "test_accounts_props.py": 29,
    "test_failover_clients.py": 29, "test_durable_pipeline.py": 27,
    "test_accounts_tools.py": 26, "test_journal_enospc.py": 24, "test_docs.py": 23,
    "test_accounts_wire.py": 8, "test_accounts_kills.py": 11, "test_cli_funds.py": 20,
    "test_journal.py": 11, "test_journal_dirlock.py": 1,
    "test_orders_audit.py": 21, "test_sim_seeds.py": 80, "test_sim_ha.py": 30,
    "test_bench_paths.py": 27, "test_link_resend.py": 1, "test_bench_gateway.py": 47,
    "test_mm.py": 18,  # measured alone at load 10-13 (12:33): 10 s of CPU with its clusters
    # exchange time (2026-12-07, load ~14): ~2.3 s CPU each with interpreter start-up
    "test_exchange_time.py": 6, "test_time_streams.py": 4,
    # candles (2026-12-07, load ~12): 31 s (9.5 s CPU, its processes included: one
    # `shardex up`, two worker processes, redis-servers) and 4.6 s (2.9 s CPU)
    "test_candles.py": 20, "test_candles_core.py": 5,
    # measured alone the same day, the box shared (each its own PostgreSQL server / cluster)
    "test_history_db.py": 14, "test_history_cluster.py": 18,
    "test_placement_up.py": 14,
    # the coordination contract over redis-server and a 3-member etcd (2026-12-07, load ~23):
    # 9 s of pytest wall, 4.9 s CPU with start-up, both servers and the etcd members included
    "test_coord_contract.py": 10,
    # which store a URL selects (0.9 s, 3.4 s CPU with start-up); the chaos tier's failover on
    # etcd: 3 tests, 62 s wall at load ~17 (two replicas, a router and 3 etcd members each)
    "test_coord_select.py": 1, "test_failover_etcd.py": 62,
    # the Kubernetes manifests' etcd members run for real (2026-12-08 02:34, load ~0.8):
    # 2.4 s of pytest, 1.8 s CPU with start-up and the three members
    "test_deploy_etcd.py": 2.4,
    # a whole ``shardex up --coord etcd://`` cluster (2 tests, 2026-12-08 02:40, load ~4):
    # 17-19 s of pytest wall, each test a cluster with two engine and two account replicas
    "test_failover_etcd_accounts.py": 19,
    # fee tiers, alone on the shared box: wall (CPU) 22 s (6.4), 0.8 s (2), 1.2 s (1.8)
    "test_fees_live.py": 9, "test_fee_tiers.py": 1, "test_inproc_fees.py": 1.2,
    "test_move_live.py": 20,
    "test_inproc_moves_accounts.py": 1,
    # a move's pre-copy (2026-12-08 02:05, load ~4): 0.4 s of pytest compiled, 2.6 s
    # interpreted (two in-process clusters, one restarted, and the pure book surgery)
    "test_precopy.py": 1,
    # the gateway's fan-out per step (2026-12-07, load ~6): 0.7 s wall, 0.8 s CPU
    "test_gateway_fanout.py": 1,
    # reshard, alone on the shared box (load 6-12): wall (CPU) 28 s (14.3, its cluster and
    # redis-server included), 15 s (3.8), 5 s (2.6: interpreter start-up mostly), 18 s (7.8)
    "test_reshard_live.py": 20, "test_inproc_reshard.py": 4, "test_reshard_plan.py": 0.5,
    "test_reshard_kill.py": 12,
    # reshard killed between the map and the supervisor's answer (chaos tier, 2026-12-07
    # 21:00, load ~12): 55 s of pytest, 13 s CPU (one cluster, five reshard runs)
    "test_reshard_scale_kill.py": 55,
    # the supervisor (shardex up) killed -9 at four steps of a reshard, restarted each time
    # (chaos tier, 2026-12-07 23:10, load ~11): 42 s of pytest (five shardex up starts)
    "test_reshard_supervisor_kill.py": 42,
    # reshard on shardex up --replicas 2, 2 -> 1 -> 2, then a failover of the shard the pairs
    # moved to (chaos tier, 2026-12-07 23:20, load ~8): 12-26 s of pytest
    "test_reshard_replicas.py": 20,
    # bench/reshard.py --changing at 60 orders, 3 moves (bench tier, 2026-12-07 23:48): 9 s
    "test_bench_reshard.py": 9,
    # (the files added 2026-12-07 afternoon: their quiet-box seconds x2, the scale of the rest)
    # markets at runtime, alone on the shared box: wall (CPU with interpreter start-up)
    # 15 s (5.9, its `shardex up` included), 4.1 s (3.5), 1.4 s (2.2)
    "test_markets_cli.py": 15, "test_inproc_markets.py": 5, "test_market_rules.py": 1.5,
    # expiring orders (2026-12-07, load ~16): CPU with start-up 5.8, 2.4, 2.2, 2.5 s; the live
    # one 7.2 s CPU (its `shardex up` twice) in 20 s of wall, mostly waiting for a restart
    "test_expiry_engine.py": 6, "test_expiry_wire.py": 1, "test_expiry_shard.py": 1,
    "test_inproc_expiry.py": 3, "test_expiry_live.py": 20,
    # gtd/day stop orders (venue, 17:50, load ~8): 0.2 s wall (the in-process account-tier
    # test added above: 1.3 s wall, 2.9 s CPU with start-up)
    "test_expiry_stops.py": 0.3,
    # minimum order size (venue, 17:55): 0.2 s wall
    "test_min_qty.py": 0.3,
    "test_market_buy_band.py": 0.2,  # (venue: market buys through the tier on a banded pair)
    "test_gateway_listed.py": 0.3,  # (venue: the gateway learns a pair listed at runtime)
    # (venue: test_accounts_stream.py's first test restricts and unrestricts one account more)
    # listing a pair at runtime (2026-12-07, box shared): pytest wall (CPU with start-up)
    # 0.4 s (2.8), 3.5 s (3.1), 30 s (13, its `shardex up`, redis-server and a bridge restart)
    "test_listing.py": 0.5, "test_inproc_listing.py": 4, "test_listing_live.py": 30,
    # (venue, 17:40, load ~8: the live one now with its candles worker 11 s wall; 0.1 s)
    "test_candles_listings.py": 0.2,
    # the gateway, alone at load ~10: 38 s wall (15 s CPU with its cluster's processes and
    # pytest's start) and 0.9 s for both unit files (their tests ~0.8 s of CPU)
    # (+2.6 s wall, ~1 s CPU: the batched trades test on the module's cluster, 21:00, load ~12)
    "test_gateway.py": 40, "test_gateway_core.py": 0.8, "test_gateway_signing.py": 0.2,
    # the private REST API (17:42, load ~5): the unit file 7.4 s wall (7.2 s CPU with
    # start-up; its fuzz 200 requests), the live file 27 s wall (15 s CPU with its cluster)
    "test_rest_api.py": 7, "test_gateway_rest.py": 17,
    # the user channel (2026-12-07, load ~9): 21-30 s wall (14 s CPU with its cluster's
    # processes, a gateway restart and pytest's start); the unit files 0.1 s and 0.2 s of tests
    "test_gateway_user.py": 15, "test_gateway_userfeed.py": 0.2, "test_gateway_userhub.py": 0.3,
    # the perp channels, user messages, positions route, and the perp metrics (2026-12-07
    # 23:10, load ~5): 0.1 s and 0.16 s of tests, about 1 s wall each with pytest's start
    "test_gateway_perps.py": 0.2, "test_perp_metrics.py": 0.2,
    # bench/perps.py at a tiny size, twice (23:15, load ~8): 2.1 s wall, ~1.5 s CPU
    "test_bench_perps.py": 2.5,
    # stop orders (14:52, load ~13): CPU 7.3 s, 2.8 s, 2.5 s (redis-server included), x2
    "test_stops.py": 15, "test_inproc_stops.py": 6, "test_stops_streams.py": 5,
    # the review's (2026-12-07, load ~15): CPU with start-up 2.0 s, 1.8 s; the timed-orders
    # sim 5.5 s CPU (8 seeds) in 17 s of wall
    "test_review_rules_expiry.py": 1, "test_review_heartbeat.py": 0.5, "test_sim_timed.py": 8,
    # the Binance subset (2026-12-07, load ~7): 14-20 s wall, 12.4 s CPU with its cluster's
    # processes; the unit files 0.6 s each in pytest (2.8 and 2.6 s CPU with start-up)
    "test_binance.py": 10, "test_binance_core.py": 0.6, "test_binance_app.py": 0.6,
    # the web page (2026-12-07 18:00, load ~8): the session unit tests 1.3 s of pytest (3.9 s
    # CPU with start-up); the browser tier (CI-only) 42 s of pytest, 49 s wall, 20.5 s CPU
    # with its cluster and two Chromiums (a third of it waiting for the killed gateway);
    # test_gateway.py's browser-session test adds ~1 s in its module's cluster: 36 -> 37
    "test_gateway_sessions.py": 1.5, "test_web_page.py": 55,
    # metrics and pictures (2026-12-07 18:30, load ~15): the unit files' tests 0.1 s, 0.1 s and
    # 0.02 s of pytest (4.3, 3.4 and 2.9 s CPU with start-up); the operator numbers' live test
    # adds 4.2 s wall to test_gateway_rest.py's module cluster (a reader key, six orders): 27 -> 31
    # the browser tier's operator-page test: 19.5 s wall at load 15 (a third Chromium, a
    # reader key, orders until every shard shows numbers): 42 -> 55
    "test_gateway_session_end.py": 0.2, "test_gateway_ops.py": 0.2, "test_latplot.py": 0.1,
    # deploy (2026-12-07 17:50, load ~5): CPU 5.7 s (schema validation, 14 tests), 0.2 s,
    # and 4.5 s in 7.4 s of wall (a router, two replicas, a redis-server, one failover)
    "test_deploy.py": 7, "test_health.py": 0.3, "test_health_replicas.py": 10,
    # perps (2026-12-07 18:35, load ~18): the live file 41 s of pytest, 11 s CPU with its two
    # cluster starts (feed on, then a restart without it) and one journal replay, counted
    # as 25 (its CPU against the others' at load ~8); the unit files 0.1 s each in pytest
    "test_perps_live.py": 25, "test_perps.py": 0.3, "test_feed.py": 0.5,
    "test_inproc_perps.py": 0.2,
    # perp positions, margin and funding (2026-12-07 20:40, load ~12): 1.9 s, 1.1 s and 0.2 s
    # of pytest (the first two mostly hypothesis: 60 examples each); 3.0, 2.7 and 2.5 s CPU
    # with start-up
    # liquidations and the insurance fund (2026-12-07 21:58, load ~5): 3.2 s of pytest,
    # 4.1 s CPU with start-up (pure: engine and hypothesis, no process)
    "test_liquidation.py": 3.2,
    # the liquidation index against the full scan (2026-12-08 00:08, load ~6): 1.4 s of pytest
    "test_liqindex.py": 1.5,
    # the margin requirement against its definition (2026-12-08 00:27, load ~8): 0.3-0.9 s
    "test_perp_requirement.py": 1,
    "test_positions.py": 2, "test_funding.py": 1.2, "test_inproc_positions.py": 0.3,
    # perp margin through the account tier (2026-12-07 23:10, load ~10): 0.2 s of pytest for
    # three in-process clusters (one on virtual time, with three crashes)
    "test_inproc_margin.py": 0.3, "test_accounts_margin.py": 0.4,
    # ... and kill -9 of each side mid-move on a real cluster (chaos): 11.4 s of pytest
    "test_margin_kill.py": 12,
    # trim (2026-12-07 20:10-20:50, load 9-15): CPU before -> after, back to back, scaled into
    # the rows above: the three gateway files sharing one cluster 28.4 -> 15.6 s (x 0.55);
    # test_cluster 16.0 -> 12.6, test_accounts_edges 9.9 -> 7.1, test_bridge 26.8 -> 19.3,
    # test_observability 29.9 -> 26.6, test_journal 9.3 -> 6.2. What moved to the chaos tier:
    # the differences (the bridge's tiny-HWM test 23 s of wall alone); the event shapes' unit
    # test 0.2 s
    "test_cluster_kills.py": 8, "test_accounts_stops.py": 10, "test_codes_restart.py": 5,
    "test_journal_kills.py": 5,
    "test_event_shapes.py": 0.2,
    # hosts and clocks (2026-12-07 20:30, load ~12): the unit files 0.4 s and 1.8 s of pytest
    # (2.1 and 3.5 s CPU with start-up); the chaos tier's multi-host rehearsal (CI only), on
    # Redis and on etcd: 75 s of pytest, 44 s CPU with its four namespaces' processes;
    # test_redis_acl.py's lease TIME test adds 0.1 s to its module's Redis: 39 stays 39
    "test_hoststatus.py": 0.4, "test_lease_skew.py": 1.8, "test_multihost.py": 75,
    # reshard starting and stopping shard processes (2026-12-07 20:45, load ~10): 51-58 s of
    # pytest, 15 s CPU (two shardex up starts, now with the embedded Redis and the bridge
    # that follows the new shards live, three reshard runs); its unit tests 0.3 s; the
    # bridge's shard count follower and watches 0.7 s
    "test_reshard_processes.py": 51, "test_reshard_processes_unit.py": 0.3,
    "test_bridge_follow.py": 0.7,
    # the Prometheus config's rewrite and reload against a stand-in HTTP server (2026-12-07
    # 23:05, load ~6): 0.6 s; test_reshard_processes.py runs a real Prometheus too (+~2 s)
    "test_prometheus_reload.py": 0.6,
    # reshard with the account tier (2026-12-07 20:35, load ~10): 32 s of pytest, 10.6 s CPU
    # (one shardex up start, a grow restarting the account shard and router, an audit)
    "test_reshard_accounts.py": 40,
    # the forward checked once (2026-12-07 20:45, load ~4): 0.05 s of pytest (2.3 s CPU with
    # start-up)
    "test_forward_vetted.py": 0.1,
    # the perp risk rules past a plain take-over (a stale oracle, partial liquidation, ADL,
    # a cascade, one feed source's flash crash) and the perp property tests against a
    # reference model (2026-12-07 23:20, load ~10): 0.3 s and 1.8 s of pytest, pure engine
    # and hypothesis (35 examples), no process
    "test_perp_risk.py": 0.3, "test_perp_props.py": 1.8,
    # kill -9 of a perp shard mid-liquidation, the chaos tier (2026-12-07 23:45, load ~10):
    # 2 tests, 36 s of pytest (a `shardex up` each, 2,000 accounts set up, a restart)
    "test_perp_kills.py": 36,
    # bench/liquidation.py at 40 and 20 longs (2026-12-07 23:40, load ~7): 0.1 s of pytest
    "test_bench_liquidation.py": 0.1,
}  # fmt: skip
DEFAULT_S = 0.5

# Files that share one cluster per pytest process (tests/support/shared_gateway.py): dealt to
# the same slice one after another, so one worker starts that cluster once for all of them.
TOGETHER: tuple[tuple[str, ...], ...] = (
    ("test_gateway_rest.py", "test_gateway_user.py", "test_binance.py"),
)


def slice_sizes(total: int, workers: int) -> list[int]:
    """How many tests each worker's first slice holds, as ``worksteal`` deals them out."""
    sizes = []
    for k in range(workers):
        sizes.append(total // (workers - k))
        total -= sizes[-1]
    return sizes


def file_order(
    files: Sequence[tuple[str, int]],
    workers: int,
    seconds: Mapping[str, float] = MEASURED_S,
    together: Sequence[Sequence[str]] = TOGETHER,
) -> list[str]:
    """``files`` (name, number of tests, in collection order) in the order to run them, so
    that each of ``workers`` slices holds about the same measured seconds, longest first.

    Longest file first, each file goes to the slice with the least work that still has room
    for all its tests (if none has, to the one with the most room: it then spills into the
    next slice). One worker (no xdist): simply the longest first. The files of a group of
    ``together`` count as one file (their seconds and tests summed) and stay adjacent."""
    weight = {name: seconds.get(name, DEFAULT_S * count) for name, count in files}
    files, members = _grouped(files, together)
    for name, parts in members.items():
        weight[name] = sum(weight[p] for p in parts)
    ranked = sorted(files, key=lambda f: -weight[f[0]])  # (stable: ties keep their order)
    if workers <= 1:
        return [m for name, _ in ranked for m in members.get(name, (name,))]
    room = slice_sizes(sum(count for _, count in files), workers)
    load = [0.0] * workers
    slices: list[list[str]] = [[] for _ in range(workers)]
    for name, count in ranked:
        fits = [k for k in range(workers) if room[k] >= count]
        if fits:
            k = min(fits, key=lambda j: (load[j], j))
        else:
            k = max(range(workers), key=room.__getitem__)
        slices[k].append(name)
        room[k] -= count
        load[k] += weight[name]
    return [m for part in slices for name in part for m in members.get(name, (name,))]


def _grouped(
    files: Sequence[tuple[str, int]], together: Sequence[Sequence[str]]
) -> tuple[list[tuple[str, int]], dict[str, tuple[str, ...]]]:
    """``files`` with each group of ``together`` (the members present) as one entry, named
    after its first member present; and each such entry's members, in the group's order."""
    counts = dict(files)
    members: dict[str, tuple[str, ...]] = {}
    lead: dict[str, str] = {}
    for group in together:
        present = tuple(name for name in group if name in counts)
        if len(present) > 1:
            members[present[0]] = present
            lead.update({name: present[0] for name in present})
    out = []
    for name, count in files:
        if name in members:
            out.append((name, sum(counts[m] for m in members[name])))
        elif name not in lead:
            out.append((name, count))
    return out, members
