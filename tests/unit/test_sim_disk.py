"""The simulated disk (``shardex.sim.disk``) and the journal on it.

First the disk itself: only synced bytes and names survive a power loss, an unsynced tail
survives as a seeded prefix (torn or not), a failed sync loses its writes for good, a full disk
writes what fits then fails. Then the journal on it: what was committed survives any crash, a
crash between a write and its sync leaves the acknowledged state or that plus the batch, never
anything else, a torn tail is cut exactly as on a real disk, and a full disk or I/O errors leave
it consistent with the commit retryable.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from decimal import Decimal as D
from pathlib import Path

import msgpack
import pytest

from shardex.client import audit_report
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.inproc import InProcCluster
from shardex.journal import Journal, JournalUnavailable, inspect
from shardex.net import mem_transport
from shardex.sim.disk import CrashPoint, CrashReport, SimDisk
from shardex.tools.workload import Workload
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(120)

W = os.O_WRONLY | os.O_CREAT
DIR = "/sim/shard-0"
SEEDS = range(60)


class Died(BaseException):
    """The process dies at this call (not an OSError: nothing in the journal catches it)."""


def _died(fd: int) -> None:
    raise Died


def _die_at_sync(disk: SimDisk) -> None:
    """The next data sync kills the process: what it wrote stays unsynced."""
    disk.fsync = disk.fdatasync = _died  # type: ignore[method-assign]


def _power_loss(disk: SimDisk, rng: random.Random) -> CrashReport:
    """The machine goes down; it comes back with a disk whose syncs work."""
    disk.__dict__.pop("fsync", None)
    disk.__dict__.pop("fdatasync", None)
    return disk.crash(rng)


def _state(engine: Engine) -> bytes:
    return msgpack.packb(engine.snapshot(), use_bin_type=True)


def _batches(n: int, size: int = 3, seed: int = 21) -> list[list]:
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=seed)
    cmds = wl.warmup(12) + wl.take(n * size - 12)
    return [cmds[i : i + size] for i in range(0, len(cmds), size)]


BATCHES = _batches(16)


def _apply(engine: Engine, journal: Journal, batch: list) -> None:
    out: list = []
    for cmd in batch:
        seq = engine.seq
        engine.apply(cmd, out)
        journal.add(seq, cmd)


def _file(disk: SimDisk, path: str, data: bytes, sync: bool = True) -> int:
    fd = disk.open(path, W, 0o644)
    disk.write(fd, data)
    if sync:
        disk.fsync(fd)
    return fd


# ----------------------------------------------------------------------------------- the disk


def test_synced_bytes_survive_and_the_unsynced_tail_is_a_seeded_prefix_maybe_torn():
    outcomes = set()
    for seed in SEEDS:
        disk = SimDisk()
        disk.makedirs("/d")
        fd = _file(disk, "/d/f", b"A" * 10)
        disk.fsync_dir("/d")
        disk.write(fd, b"B" * 10)
        disk.write(fd, b"C" * 10)
        assert disk.read_bytes("/d/f") == b"A" * 10 + b"B" * 10 + b"C" * 10  # the page cache
        report = disk.crash(random.Random(seed))
        got = disk.read_bytes("/d/f")
        assert got == (b"A" * 10 + b"B" * 10 + b"C" * 10)[: len(got)] and len(got) >= 10
        outcomes.add("all" if len(got) == 30 else "none" if len(got) == 10 else
                     "torn" if len(got) % 10 else "whole writes")  # fmt: skip
        assert report.torn == (len(got) % 10 != 0)
        with pytest.raises(OSError) as err:
            disk.write(fd, b"x")  # the crash closed every descriptor
        assert err.value.errno == errno.EBADF
    assert outcomes == {"all", "none", "torn", "whole writes"}


def test_names_are_durable_after_fsync_dir_and_a_rename_is_atomic():
    created = set()
    for seed in SEEDS:
        disk = SimDisk()
        disk.makedirs("/d")
        disk.close(_file(disk, "/d/kept", b"k"))
        disk.close(_file(disk, "/d/old.tmp", b"new"))
        disk.fsync_dir("/d")
        disk.close(_file(disk, "/d/maybe", b"m"))  # synced data, unsynced name
        disk.replace("/d/old.tmp", "/d/final")
        disk.crash(random.Random(seed))
        names = set(disk.listdir("/d"))
        assert "kept" in names and disk.read_bytes("/d/kept") == b"k"
        assert len(names & {"old.tmp", "final"}) == 1  # one or the other, never both or none
        created.add("maybe" in names)
    assert created == {True, False}  # an unsynced create may or may not survive


def test_a_failed_sync_loses_its_writes_for_good_unless_rewritten():
    disk = SimDisk(random.Random(3))
    disk.makedirs("/d")
    fd = _file(disk, "/d/f", b"A")
    disk.fsync_dir("/d")
    disk.write(fd, b"B")
    disk.eio_rate = 1.0
    with pytest.raises(OSError) as err:
        disk.fsync(fd)
    assert err.value.errno == errno.EIO
    disk.eio_rate = 0.0
    disk.fsync(fd)  # succeeds, as on Linux after a writeback error ...
    assert disk.read_bytes("/d/f") == b"AB"  # ... and reads still see the write ...
    disk.kill()
    disk.crash()
    assert disk.read_bytes("/d/f") == b"A"  # ... but it never reached the device
    fd = disk.open("/d/f", os.O_WRONLY, 0o644)
    disk.write(fd, b"B")
    disk.eio_rate = 1.0
    with pytest.raises(OSError):
        disk.fsync(fd)
    disk.eio_rate = 0.0
    disk.ftruncate(fd, 1)  # what the journal does: cut the failed write off, write it again
    disk.pwrite(fd, b"B", 1)
    disk.fsync(fd)
    disk.crash()
    assert disk.read_bytes("/d/f") == b"AB"


@pytest.mark.parametrize("full_on", ["write", "sync"])
def test_a_full_disk_fails_with_enospc(full_on):
    disk = SimDisk(space=25, full_on=full_on)
    disk.makedirs("/d")
    fd = disk.open("/d/f", W, 0o644)
    assert disk.write(fd, b"x" * 20) == 20
    disk.fsync(fd)
    if full_on == "write":
        assert disk.write(fd, b"y" * 10) == 5  # a short write: what fits ...
        with pytest.raises(OSError) as err:
            disk.write(fd, b"y" * 5)  # ... then ENOSPC
    else:
        assert disk.write(fd, b"y" * 10) == 10  # the page cache takes it ...
        with pytest.raises(OSError) as err:
            disk.fsync(fd)  # ... the device has no room for it
    assert err.value.errno == errno.ENOSPC
    disk.space = None
    disk.ftruncate(fd, 20)  # (the offset stays where it was, as with the os call)
    disk.lseek(fd, 20, os.SEEK_SET)
    assert disk.write(fd, b"z" * 10) == 10
    disk.fsync(fd)
    disk.crash()
    assert disk.read_bytes("/d/f") == b"x" * 20 + b"z" * 10


def test_a_killed_process_loses_nothing_it_wrote():
    disk = SimDisk()
    disk.makedirs("/m1")
    disk.makedirs("/m2")
    fd1 = _file(disk, "/m1/f", b"one", sync=False)
    fd2 = _file(disk, "/m2/f", b"two", sync=False)
    assert disk.kill("/m1") == 1
    with pytest.raises(OSError):
        disk.write(fd1, b"!")
    disk.write(fd2, b"!")  # another machine's process goes on
    assert disk.read_bytes("/m1/f") == b"one" and disk.listdir("/m1") == ["f"]
    disk.crash(random.Random(0), under="/m2")  # a power loss of the other machine only
    assert disk.read_bytes("/m1/f") == b"one"


def test_same_seed_same_disk_byte_for_byte():
    def run(seed: int) -> tuple:
        disk = SimDisk(random.Random(seed), eio_rate=0.2)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        fails = 0
        for batch in BATCHES:
            _apply(engine, j, batch)
            try:
                j.commit()
            except JournalUnavailable:
                fails += 1
        report = disk.crash()
        names = disk.listdir(DIR)
        return fails, report, names, [disk.read_bytes(f"{DIR}/{n}") for n in names]

    assert run(7) == run(7)
    assert len({repr(run(seed)) for seed in range(4)}) > 1


# -------------------------------------------------------------------------- the journal on it


def _journal(disk: SimDisk, **kw) -> Journal:
    kw.setdefault("preallocate", 512)  # many preallocation steps crossed by a few records
    kw.setdefault("segment_bytes", 1024)  # and several segments
    return Journal(DIR, DEFAULT_MARKETS, fsync="batch", disk=disk, **kw)


def _recover(disk: SimDisk):
    return Journal(DIR, DEFAULT_MARKETS, disk=disk).recover()


def test_a_crash_between_write_and_sync_keeps_what_was_acked():
    """Batches committed (acked) survive any crash; the batch whose sync never ran survives
    whole or not at all (a torn record is cut), never anything in between."""
    seen = set()
    for seed in SEEDS:
        rng = random.Random(seed)
        disk = SimDisk(rng)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        stop = rng.randrange(len(BATCHES))
        for i, batch in enumerate(BATCHES):
            if i == 5:
                j.snapshot(engine)
            acked = _state(engine)
            _apply(engine, j, batch)
            if i == stop:
                _die_at_sync(disk)  # written, and the process dies at its sync
            try:
                j.commit()
            except Died:
                break
        _power_loss(disk, rng)
        rec = _recover(disk)
        got = _state(rec.engine)
        assert got in (acked, _state(engine)), f"seed {seed}: neither acked nor acked + batch"
        seen.add((got == acked, bool(rec.truncated)))
    assert (True, True) in seen and (False, False) in seen, seen  # torn and lost, and kept


def test_a_torn_tail_is_cut_exactly_as_on_a_real_disk(tmp_path):
    """The same bytes on a real file and on the simulated disk recover to the same state,
    cut at the same offset, leaving the same file."""
    compared = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        disk = SimDisk(rng)
        j = _journal(disk, segment_bytes=64 << 10)
        engine = Engine(DEFAULT_MARKETS)
        for batch in BATCHES[:-1]:
            _apply(engine, j, batch)
            j.commit()
        _apply(engine, j, BATCHES[-1])
        _die_at_sync(disk)
        with pytest.raises(Died):
            j.commit()
        if not _power_loss(disk, rng).torn:
            continue
        real = tmp_path / f"seed{seed}"
        real.mkdir()
        for name in disk.listdir(DIR):
            (real / name).write_bytes(disk.read_bytes(f"{DIR}/{name}"))
        sim_rec = _recover(disk)
        real_rec = Journal(real, DEFAULT_MARKETS).recover()
        assert sim_rec.truncated and len(sim_rec.truncated) == len(real_rec.truncated)
        assert [t.rsplit("@")[1] for t in sim_rec.truncated] == [
            t.rsplit("@")[1] for t in real_rec.truncated
        ]
        assert _state(sim_rec.engine) == _state(real_rec.engine)
        for name in disk.listdir(DIR):
            assert disk.read_bytes(f"{DIR}/{name}") == (real / name).read_bytes()
        compared += 1
    assert compared >= 5


@pytest.mark.parametrize("full_on", ["write", "sync"])
def test_a_full_disk_leaves_the_journal_consistent_and_the_commit_retryable(full_on):
    filled = 0
    for space in range(600, 3000, 97):
        disk = SimDisk(random.Random(space), space=space, full_on=full_on)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        for batch in BATCHES:
            acked = engine.seq
            _apply(engine, j, batch)
            try:
                j.commit()
            except JournalUnavailable as exc:
                assert "No space left" in str(exc) and not j.healthy
                break
        else:
            continue
        seen = inspect(DIR, disk=disk)  # read-only: consistent, at the acked seq
        assert seen["seq"] == acked and seen["seq_error"] is None, (space, seen)
        assert not any(s["damage"] or s["torn_tail"] for s in seen["segments"]), seen
        disk.space = None  # space returns: the same commit goes through
        j.commit()
        assert j.healthy and j.pending == 0
        disk.crash()
        assert _state(_recover(disk).engine) == _state(engine)
        filled += 1
    assert filled >= 15  # (the disk really filled up, at as many points of the run)


def test_seeded_io_errors_never_lose_an_acked_batch():
    """EIO on writes, syncs and truncates at random: each commit is retried until it
    succeeds; a power loss afterwards keeps every acked batch (a failed sync's writes never
    reach the device: the journal must cut them off and write them again, not sync again)."""
    injected = 0
    for seed in range(12):
        rng = random.Random(seed)
        disk = SimDisk(rng, eio_rate=0.15)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        for i, batch in enumerate(BATCHES):
            _apply(engine, j, batch)
            for _ in range(200):
                try:
                    j.commit()
                    if i % 6 == 5:
                        j.snapshot(engine)
                    break
                except JournalUnavailable:
                    pass
            else:
                pytest.fail(f"seed {seed}: batch {i} never committed")
        injected += disk.faults["eio"]
        disk.eio_rate = 0.0
        disk.crash(rng)
        assert _state(_recover(disk).engine) == _state(engine), f"seed {seed}"
    assert injected > 50  # the errors really happened


def test_a_killed_process_loses_nothing_written_a_power_loss_what_was_not_synced():
    kept = set()
    for seed in range(20):
        rng = random.Random(seed)
        disk = SimDisk(rng)
        j = Journal(DIR, DEFAULT_MARKETS, fsync="none", disk=disk)  # (written, never synced)
        engine = Engine(DEFAULT_MARKETS)
        for batch in BATCHES:
            _apply(engine, j, batch)
            j.commit()
        _apply(engine, j, BATCHES[0][:1])  # buffered, not written: gone with the process
        j.abandon()
        rec = _recover(disk)  # a process crash: every write is there
        assert rec.engine.seq == engine.seq - 1 and not rec.truncated
        disk.crash(rng)  # a power loss: an unsynced prefix of them, at most
        kept.add(_recover(disk).engine.seq)
    assert min(kept) < engine.seq - 1 and len(kept) > 2


def test_the_journal_writer_thread_on_the_simulated_disk():
    """The writer thread writes and syncs while the caller reads the segments back (the lock
    serialises them): what ``durable`` covers survives a power loss."""
    disk = SimDisk(random.Random(4))
    j = _journal(disk)
    j.start_writer()
    engine = Engine(DEFAULT_MARKETS)
    try:
        for batch in BATCHES:
            _apply(engine, j, batch)
            ticket = j.submit()
            j.records(0, 1000)  # (a standby's catch-up reading on the caller's thread)
        j.wait(ticket, timeout=30)
    finally:
        j.close()  # (its trim of the preallocated zeros is not synced: the crash may undo it)
    disk.crash()
    assert _state(_recover(disk).engine) == _state(engine)


def test_a_snapshot_written_but_not_renamed_durably_falls_back_to_the_journal():
    for seed in range(20):
        rng = random.Random(seed)
        disk = SimDisk(rng)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        for batch in BATCHES[:8]:
            _apply(engine, j, batch)
            j.commit()
        disk.fsync_dir = lambda path: None  # the rename's directory sync is lost
        j.snapshot(engine)
        del disk.fsync_dir
        disk.crash(rng)
        assert _state(_recover(disk).engine) == _state(engine)


def test_paths_are_normalised_and_missing_ones_fail_as_the_os_does():
    disk = SimDisk()
    disk.makedirs(Path("/a/b"))
    assert disk.isdir("/a") and disk.isdir("/a/b/") and disk.listdir("/a") == ["b"]
    with pytest.raises(FileNotFoundError):
        disk.open("/nope/f", W, 0o644)
    with pytest.raises(FileNotFoundError):
        disk.read_bytes("/a/b/f")
    with pytest.raises(FileNotFoundError):
        disk.listdir("/x")
    fd = disk.open("/a/b/../b/f", W, 0o644)
    disk.close(fd)
    assert disk.listdir("/a/b") == ["f"]
    with pytest.raises(FileExistsError):
        disk.open("/a/b/f", W | os.O_EXCL, 0o644)


# -------------------------------------------------------------- an engine shard on the disk

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")


def _die_at_sync_no(disk: SimDisk, n: int) -> None:
    """The ``n``-th data sync from now kills the process that asked for it, before it runs."""
    count = [0]
    real = disk.fsync

    def sync(fd: int) -> None:
        count[0] += 1
        if count[0] == n:
            raise Died
        real(fd)

    disk.fsync = disk.fdatasync = sync  # type: ignore[method-assign]


def _mortal(node) -> list:
    """``node`` dies (never runs or closes again) when ``Died`` leaves its turn; the list
    gets it then. The rest of the cluster runs on: the router forwards what it had."""
    dead: list = []
    turn = node.turn

    def mortal_turn() -> None:
        try:
            turn()
        except Died:
            dead.append(node)
            node.turn = node.close = lambda: None

    node.turn = mortal_turn
    return dead


async def _trade(cluster: InProcCluster, n: int, tag: str, acked: list, stop: list) -> None:
    """Client ``n`` places resting bids (never crossing: each at its own price) until ``stop``;
    each one acknowledged goes into ``acked``."""
    async with cluster.client(account=f"acct{n}") as c:
        k = 0
        while not stop:
            sym = SYMBOLS[k % len(SYMBOLS)]
            oid = f"{tag}-{n}-{k}"
            r = await c.place(sym, "buy", "1", str(1000 + n * 10_000 + k), id=oid)
            if r.ok:
                acked.append((sym, oid, f"acct{n}"))
            k += 1


def _quiet(cluster: InProcCluster, acked: list):
    """A predicate: true once nothing moved on the hub and nothing was acked for a few
    scheduler rounds (every reply sent has been read)."""
    hub = cluster.net.hub  # type: ignore[attr-defined]
    last: list = [None, 0]

    def quiet() -> bool:
        state = (hub.moved, len(acked))
        if state != last[0]:
            last[0], last[1] = state, cluster.rounds
            return False
        return cluster.rounds - last[1] >= 5

    return quiet


async def _check_live(cluster: InProcCluster, acked: list) -> None:
    by_account: dict[str, list] = {}
    for sym, oid, acct in acked:
        by_account.setdefault(acct, []).append((sym, oid))
    for acct, orders in by_account.items():
        async with cluster.client(account=acct) as c:
            for sym, oid in orders:
                st = await c.order_status(sym, oid)
                assert st["state"] == "live", f"acked order {oid} after a power loss: {st}"


def test_an_engine_shard_on_a_simulated_disk_keeps_every_acked_order(tmp_path):
    """Engine shards (the production ``ShardNode`` over the in-memory transport) journal on
    one simulated disk; one dies at a seeded sync (mid-turn: its batch is written, the sync
    never runs), the rest shut down, the power goes, and the cluster restarts on the same
    disk: every order a client was told about is there, live, in every round (acks are
    released only after the sync)."""
    rng = random.Random(11)
    disk = SimDisk(rng)
    p = plan(2, data_dir=str(tmp_path))  # (the journals are on ``disk``, under this path)
    acked: list[tuple[str, str, str]] = []

    async def round_(rnd: int) -> CrashReport:
        net = mem_transport()
        net.disk = disk
        cluster = InProcCluster(p, net)
        await cluster.__aenter__()
        await _check_live(cluster, acked)
        dead = [d for node in cluster.engines for d in [_mortal(node)]]
        _die_at_sync_no(disk, rng.randint(3, 30))
        stop: list = []
        clients = [asyncio.ensure_future(_trade(cluster, n, f"r{rnd}", acked, stop))
                   for n in range(3)]  # fmt: skip
        await cluster.until(lambda: any(dead), timeout=60, what="a shard's death")
        stop.append(True)
        await cluster.until(_quiet(cluster, acked), timeout=60, what="quiet")
        for t in clients:
            t.cancel()  # (the dead shard's clients wait for it)
        await asyncio.gather(*clients, return_exceptions=True)
        disk.__dict__.pop("fsync")
        disk.__dict__.pop("fdatasync")
        await cluster.stop()  # the others stop cleanly; the dead one closes nothing
        return disk.crash(rng)  # then the power goes

    async def main() -> int:
        losses = 0
        for rnd in range(3):
            before = len(acked)
            report = await round_(rnd)
            assert len(acked) > before  # orders were acked before the power went
            losses += bool(report.files)
        net = mem_transport()
        net.disk = disk
        async with InProcCluster(p, net) as cluster:
            await _check_live(cluster, acked)
        return losses

    assert asyncio.run(main()) >= 1  # a power loss really threw unsynced bytes away


async def _fund(cluster: InProcCluster, n: int, tag: str, acked: dict, stop: list) -> None:
    """Account ``a<n>`` deposits 1 USD at a time (each with its own ref) and rests a small
    bid after each, until ``stop``; ``acked`` counts its acknowledged deposits."""
    acct = f"a{n}"
    async with cluster.client(timeout=5) as c:
        k = 0
        while not stop:
            if (await c.deposit(acct, "USD", "1", ref=f"{tag}-{acct}-{k}")).ok:
                acked[acct] = acked.get(acct, 0) + 1
            await c.place("BTC-USD", "buy", "0.001", "100", account=acct, id=f"{tag}-{n}-{k}")
            k += 1


async def _check_funds(cluster: InProcCluster, acked: dict) -> None:
    async with cluster.client(timeout=5) as c:
        for acct, n in acked.items():
            total = sum((await c.balance(acct)).get("USD", ()), D(0))  # available + held
            assert total >= n, f"{acct}: {n} deposits acked, {total} USD after a power loss"
        lines, ok = audit_report(await c.audit())
        assert ok, lines


def test_an_account_shard_on_a_simulated_disk_keeps_every_acked_deposit(tmp_path):
    """The account tier too: a shard (engine or account) dies at a seeded sync, the rest stop,
    the power goes; after the restart every acked deposit is there and money is conserved."""
    rng = random.Random(5)
    disk = SimDisk(rng)
    p = plan(1, 1, data_dir=str(tmp_path))
    acked: dict[str, int] = {}

    async def round_(rnd: int) -> None:
        net = mem_transport()
        net.disk = disk
        cluster = InProcCluster(p, net)
        await cluster.__aenter__()
        await _check_funds(cluster, acked)
        dead = [_mortal(node) for node in [*cluster.engines, *cluster.accounts]]
        _die_at_sync_no(disk, rng.randint(3, 40))
        stop: list = []
        clients = [asyncio.ensure_future(_fund(cluster, n, f"r{rnd}", acked, stop))
                   for n in range(3)]  # fmt: skip
        await cluster.until(lambda: any(dead), timeout=60, what="a shard's death")
        stop.append(True)
        await cluster.until(_quiet(cluster, list(acked.items())), timeout=60, what="quiet")
        for t in clients:
            t.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        disk.__dict__.pop("fsync")
        disk.__dict__.pop("fdatasync")
        await cluster.stop()
        disk.crash(rng)

    async def main() -> None:
        for rnd in range(2):
            await round_(rnd)
        net = mem_transport()
        net.disk = disk
        async with InProcCluster(p, net) as cluster:
            await _check_funds(cluster, acked)

    asyncio.run(main())
    assert sum(acked.values()) > 0
    # the journals are on the simulated disk, not the real one under the same path
    assert disk.listdir(f"{tmp_path}/accounts-0") and disk.listdir(f"{tmp_path}/shard-0")
    assert not list(tmp_path.glob("*/journal-*.log"))


# ------------------------------------------------------------------ crash points (SimDisk.trap)


def test_a_trap_springs_at_the_nth_write_after_it_landed_and_only_under_its_directory():
    disk = SimDisk(random.Random(1))
    disk.makedirs("/a")
    disk.makedirs("/b")
    fa, fb = _file(disk, "/a/log", b"", sync=False), _file(disk, "/b/log", b"", sync=False)
    disk.trap("/a", "write", 2)
    disk.write(fb, b"elsewhere")
    disk.write(fb, b"elsewhere")  # (not under /a: does not count)
    disk.write(fa, b"one")
    with pytest.raises(CrashPoint) as got:
        disk.write(fa, b"two")
    assert (got.value.op, got.value.path, got.value.root) == ("write", "/a/log", "/a")
    assert not isinstance(got.value, OSError)  # (nothing in a node handles it)
    assert disk.read_bytes("/a/log") == b"onetwo"  # landed in the page cache, unsynced
    disk.write(fa, b"three")  # fired once
    assert disk.faults["traps"] == 1


def test_a_trap_at_a_sync_dies_before_it_so_a_power_loss_may_lose_the_write():
    kept = set()
    for seed in range(40):
        disk = SimDisk(random.Random(seed))
        disk.makedirs("/j")
        fd = _file(disk, "/j/log", b"synced.")
        disk.fsync_dir("/j")
        disk.write(fd, b"written-not-synced")
        disk.trap("/j", "sync", 1)
        with pytest.raises(CrashPoint):
            disk.fsync(fd)
        assert disk.syncs == 1  # (the file's first sync only: the trapped one never ran)
        disk.crash(under="/j")
        data = disk.read_bytes("/j/log")
        assert data.startswith(b"synced.") and b"written-not-synced".startswith(data[7:])
        kept.add(len(data))
    assert len(kept) > 2  # lost, kept, torn: seeded


def test_a_trap_replaces_the_one_before_in_its_directory_and_untrap_removes_them():
    disk = SimDisk()
    disk.makedirs("/j")
    fd = _file(disk, "/j/log", b"", sync=False)
    disk.trap("/j", "write", 1)
    disk.trap("/j", "sync", 1)
    disk.write(fd, b"x")  # the write trap was replaced
    assert disk.untrap("/j") == 1
    disk.fsync(fd)
    with pytest.raises(ValueError):
        disk.trap("/j", "read", 1)


def _revive(disk: SimDisk) -> None:
    """The process that died at its sync is gone; the next one's syncs work (same machine)."""
    disk.__dict__.pop("fsync", None)
    disk.__dict__.pop("fdatasync", None)


def test_what_a_restart_recovered_from_the_page_cache_survives_a_later_power_loss():
    """A process dies between a write and its sync; the restart recovers that write from the
    page cache, serves it and acks more in a new segment; then the power fails before the
    kernel wrote the old tail back. What the restarted shard served and acked must survive
    (its next sync of that segment, or recovery, makes the old tail durable too); a hole --
    the new segment kept, the old tail lost -- would leave the shard unable to start."""
    for seed in range(20):
        rng = random.Random(seed)
        disk = SimDisk(rng)
        j = _journal(disk)
        engine = Engine(DEFAULT_MARKETS)
        for batch in BATCHES[:6]:
            _apply(engine, j, batch)
            j.commit()
        _apply(engine, j, BATCHES[6])
        _die_at_sync(disk)
        with pytest.raises(Died):
            j.commit()
        j.abandon()
        _revive(disk)
        j2 = _journal(disk)  # the restart, on the same machine
        rec = j2.recover()
        assert _state(rec.engine) == _state(engine)  # (the page cache had it all)
        for batch in BATCHES[7:10]:
            _apply(rec.engine, j2, batch)
            j2.commit()  # acked
        disk.crash(rng)  # the power fails
        got = _recover(disk)
        assert _state(got.engine) == _state(rec.engine), f"seed {seed}: acked state lost"


@pytest.mark.xfail(
    strict=True,
    reason="open: recovery trusts a page cache that a failed sync "
    "left unwritten (see the docstring); remove this mark with the fix",
)
def test_a_restart_after_a_failed_sync_does_not_serve_what_the_disk_never_got():
    """Found by the simulator (an EIO spell, a crash point, a restart, a power loss): a sync
    fails (EIO) and so does the cut of the record it was for; the process dies before its
    retry. Linux marks the failed pages clean: the record stays readable in the page cache
    but is not on the disk, and no later fsync will write it. The restart replays it from
    the cache as if durable, acks on top of it in a new segment, and a power loss then
    leaves a hole before that segment: the shard refuses to start, its acked batches out of
    reach. Recovery would have to write back what it replayed (or refuse) to be safe."""
    rng = random.Random(0)
    disk = SimDisk(rng)
    j = _journal(disk)
    engine = Engine(DEFAULT_MARKETS)
    for batch in BATCHES[:6]:
        _apply(engine, j, batch)
        j.commit()
    failing = {"sync", "ftruncate"}  # the batch's sync, then the cut of its record
    real = disk._fault

    def fault(call: str) -> None:
        if call in failing:
            failing.discard(call)
            raise OSError(errno.EIO, f"Input/output error (simulated, {call})")

    disk._fault = fault  # type: ignore[method-assign]
    _apply(engine, j, BATCHES[6])
    with pytest.raises(JournalUnavailable):
        j.commit()
    disk._fault = real  # type: ignore[method-assign]
    j.abandon()  # killed before the retry
    j2 = _journal(disk)
    rec = j2.recover()
    for batch in BATCHES[7:10]:
        _apply(rec.engine, j2, batch)
        j2.commit()  # acked
    disk.crash(rng)
    assert _state(_recover(disk).engine) == _state(rec.engine)
