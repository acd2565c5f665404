"""Redis ACL users (``shardex.redisauth``) on real servers: Debian's redis-server and the embedded
valkey-server. The bridge user writes ``shardex:*`` and nothing else, the reader only reads (and
keeps its own consumer-group state), the default user can do nothing, and no password is ever
in a log line or on a command line."""

from __future__ import annotations

import multiprocessing
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import require

from shardex.node.bridge import WRITE_SCRIPT
from shardex.redisauth import (
    REDIS_FILE,
    RedisUsers,
    bridge_url,
    mask_url,
    resolve_url,
    url_user,
    with_credentials,
)
from shardex.tools.tail import TailError, follow, tail_url
from shardex.tools.tail import connect as tail_connect
from tests.support.bridge import BridgeProc, assert_exact, wait_until
from tests.support.fakeshard import FakeShards, accepted, trade
from tests.support.redis import redis_server_binary
from tests.support.redis_acl import BINARIES, AclRedis, refused


def self_signed(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (``cert.pem``, ``key.pem``) made with openssl."""
    require(shutil.which("openssl") is not None, "no openssl to make a test certificate")
    directory.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return directory


@pytest.fixture(params=sorted(BINARIES))
def acl_redis(request, tmp_path):
    users = RedisUsers.ensure(tmp_path / "keys")
    server = AclRedis(BINARIES[request.param], users, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def noperm(call) -> None:
    """``call`` is refused by the ACL: NOPERM for a command, or the script error that names the
    refused command or key (the text differs between redis-server and valkey-server)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        call()
    text = str(info.value).lower()
    acl = ("permission", "can't run", "can't access", "acl failure")
    assert isinstance(info.value, redis.exceptions.NoPermissionError) or any(
        w in text for w in acl
    ), text


# -- the credentials file -----------------------------------------------------------------------


def _ensure(path: str, out) -> None:
    out.put(RedisUsers.ensure(path).passwords)


def test_credentials_file_is_private_idempotent_and_race_safe(tmp_path):
    keys = tmp_path / "keys"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(str(keys), out)) for _ in range(6)]
    for p in procs:
        p.start()
    got = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(20)
    assert all(g == got[0] for g in got), "racing processes made different passwords"
    assert set(got[0]) == {"bridge", "reader", "lease", "consumer", "candles"}
    assert len(set(got[0].values())) == 5, "two users share a password"
    assert all(len(p) >= 32 for p in got[0].values())
    assert RedisUsers.ensure(keys).passwords == got[0]  # idempotent
    assert stat.S_IMODE((keys / REDIS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    users = RedisUsers.load(keys)
    argv = " ".join(users.server_args() + users.acl_lines())
    assert not any(p in argv for p in got[0].values()), "a cleartext password on argv"


def test_broken_or_missing_credentials_are_a_clear_error(tmp_path):
    from shardex.redisauth import RedisAuthError

    with pytest.raises(RedisAuthError, match="no Redis credentials"):
        RedisUsers.load(tmp_path)
    (tmp_path / REDIS_FILE).write_text('{"users": {"bridge": {}}}')
    with pytest.raises(RedisAuthError, match="not a shardex Redis credentials"):
        RedisUsers.load(tmp_path)
    with pytest.raises(RedisAuthError, match="without a password"):
        resolve_url("redis://bridge@127.0.0.1:1/0", None)


def test_urls_carry_credentials_and_logs_never_do(tmp_path):
    users = RedisUsers.ensure(tmp_path)
    pw = users.password("bridge")
    url = users.url("rediss://127.0.0.1:6380/2?ssl_cert_reqs=none", "bridge")
    assert url.startswith("rediss://bridge:")
    assert url.endswith("@127.0.0.1:6380/2?ssl_cert_reqs=none")
    assert url_user(url) == ("bridge", pw)
    assert mask_url(url) == "rediss://bridge:***@127.0.0.1:6380/2?ssl_cert_reqs=none"
    assert pw not in mask_url(url)
    assert mask_url("redis://h:1/0?password=s3cret&db=1") == "redis://h:1/0?password=***&db=1"
    # the supervisor's argv form: user, no password; resolved from the keys dir
    assert bridge_url("redis://127.0.0.1:5/0") == "redis://bridge@127.0.0.1:5/0"
    assert resolve_url(bridge_url("redis://127.0.0.1:5/0"), tmp_path) == users.url(
        "redis://127.0.0.1:5/0", "bridge"
    )
    given = "redis://someone:theirs@db.example:6379/0"  # an operator's own: untouched
    assert resolve_url(given, tmp_path) == given
    assert resolve_url("redis://127.0.0.1:5/0", tmp_path) == "redis://127.0.0.1:5/0"
    # a password with URL-special characters survives redis-py's parsing
    odd = with_credentials("redis://[::1]:7/0", "us er", "p@ss:w/rd%")
    kw = redis.connection.parse_url(odd)
    assert (kw["username"], kw["password"], kw["host"], kw["port"]) == ("us er", "p@ss:w/rd%",
                                                                       "::1", 7)  # fmt: skip


# -- the servers accept the rules, and the rules hold ---------------------------------------------


def test_default_user_can_do_nothing(acl_redis):
    anon = acl_redis.client(None)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.ping()
    wrong = redis.Redis.from_url(with_credentials(acl_redis.url, "bridge", "x" * 40))
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()


def test_bridge_user_writes_shardex_keys_only(acl_redis):
    b = acl_redis.client("bridge")
    assert b.xadd("shardex:events:0", {"seq": "1"}, id="1-0") == "1-0"
    assert b.xrevrange("shardex:events:0", count=1)[0][0] == "1-0"
    assert b.xlen("shardex:events:0") == 1
    assert "permissions" in refused(lambda: b.set("foo", "1"))
    # the epoch fence key of the write script: GET/SET there, but never on the lease's keys
    assert b.set("shardex:events:0:epoch", "1") and b.get("shardex:events:0:epoch") == "1"
    for call in (lambda: b.set("shardex:lease:0", "1|evil|tcp://x:1"),
                 lambda: b.get("shardex:lease:0"), lambda: b.xadd("shardex:lease:0", {"a": "1"}),
                 lambda: b.set("shardex:other", "1")):  # fmt: skip
        assert "permissions" in refused(call)
    assert "permissions" in refused(lambda: b.xadd("other:x", {"a": "1"}))
    assert "permissions" in refused(lambda: b.xrange("other:x"))
    for call in (lambda: b.delete("shardex:events:0"), lambda: b.xtrim("shardex:events:0", 0),
                 lambda: b.xdel("shardex:events:0", "1-0"), lambda: b.flushall(),
                 lambda: b.config_get("*"), lambda: b.keys("*"),
                 lambda: b.eval("return 1", 0)):  # fmt: skip
        assert "no permissions" in refused(call)
    # the bridge's own script: allowed on shardex:* streams, refused as a whole (before any
    # write) when a declared stream is outside shardex:*
    sha = b.script_load(WRITE_SCRIPT)
    import msgpack

    blob = msgpack.packb([["2-0", ["seq", "2"], "X", ["seq", "2"]]], use_bin_type=True)
    res = b.evalsha(sha, 2, "shardex:events:0", "shardex:trades:X", blob, "shardex:trades:", "0")
    assert res[:3] == [1, 0, 1]
    blob = msgpack.packb([["3-0", ["seq", "3"], "X", ["seq", "3"]]], use_bin_type=True)
    assert "permissions" in refused(
        lambda: b.evalsha(sha, 2, "shardex:events:0", "other:trades:X", blob, "other:trades:", "0")
    )
    assert b.xlen("shardex:events:0") == 2, "a refused batch wrote part of itself"
    # a script cannot reach undeclared keys outside shardex:* either (checked at each call)
    blob = msgpack.packb([["4-0", ["seq", "4"], "X", ["seq", "4"]]], use_bin_type=True)
    assert "not declared" in refused(
        lambda: b.evalsha(sha, 1, "shardex:events:0", blob, "other:trades:", "0")
    )


def test_reader_only_reads(acl_redis):
    """Regression: the "read-only" reader could XGROUP DELCONSUMER, XACK, XCLAIM and XAUTOCLAIM
    in other consumers' groups; it now reads and nothing else (groups: user ``consumer``)."""
    b = acl_redis.client("bridge")
    key = "shardex:trades:BTC-USD"
    for i in range(1, 6):
        b.xadd(key, {"seq": str(i)}, id=f"{i}-0")
    c = acl_redis.client("consumer")  # someone else's group, one entry pending in it
    assert c.xgroup_create(key, "settlement", id="0")
    assert len(c.xreadgroup("settlement", "worker-1", {key: ">"}, count=1)[0][1]) == 1
    r = acl_redis.client("reader")
    assert [e[0] for e in r.xread({key: "0"})[0][1]] == [f"{i}-0" for i in range(1, 6)]
    assert r.xrange(key, count=2)[1][0] == "2-0" and r.xrevrange(key, count=1)[0][0] == "5-0"
    assert r.xlen(key) == 5 and r.exists(key) == 1 and r.type(key) == "stream"
    assert r.xinfo_stream(key)["length"] == 5 and r.xinfo_groups(key)[0]["pending"] == 1
    assert r.xpending(key, "settlement")["pending"] == 1
    for call in (lambda: r.xgroup_create(key, "mine", id="0"),
                 lambda: r.xgroup_createconsumer(key, "settlement", "intruder"),
                 lambda: r.xgroup_delconsumer(key, "settlement", "worker-1"),
                 lambda: r.xreadgroup("settlement", "intruder", {key: ">"}),
                 lambda: r.xack(key, "settlement", "1-0"),
                 lambda: r.xclaim(key, "settlement", "intruder", 0, ["1-0"]),
                 lambda: r.xautoclaim(key, "settlement", "intruder", 0),
                 lambda: r.xadd(key, {"forged": "1"}), lambda: r.delete(key),
                 lambda: r.xtrim(key, 0), lambda: r.xdel(key, "1-0"),
                 lambda: r.execute_command("XSETID", key, "9-0"),
                 lambda: r.xgroup_destroy(key, "settlement"),
                 lambda: r.xgroup_setid(key, "settlement", "0"),
                 lambda: r.set("foo", "1"), lambda: r.flushall(), lambda: r.keys("*"),
                 lambda: r.script_load("return 1"), lambda: r.config_get("*"),
                 lambda: r.get("shardex:lease:0"), lambda: r.type("shardex:lease:0")):  # fmt: skip
        noperm(call)
    noperm(lambda: r.xread({"other:x": "0"}))
    info = r.xinfo_groups(key)[0]
    assert (info["consumers"], info["pending"]) == (1, 1), "the reader changed a group"
    assert b.xlen(key) == 5 and b.xrange(key)[0][1] == {"seq": "1"}


def test_consumer_keeps_group_state_but_never_writes(acl_redis):
    b = acl_redis.client("bridge")
    key = "shardex:trades:BTC-USD"
    for i in range(1, 6):
        b.xadd(key, {"seq": str(i)}, id=f"{i}-0")
    c = acl_redis.client("consumer")
    assert c.xgroup_create(key, "g", id="0")
    assert c.xgroup_create("shardex:trades:NEW-USD", "g", id="0", mkstream=True)
    got = c.xreadgroup("g", "c1", {key: ">"}, count=3)[0][1]
    assert [e[0] for e in got] == ["1-0", "2-0", "3-0"]
    assert c.xack(key, "g", "1-0") == 1
    assert c.xpending(key, "g")["pending"] == 2
    assert [e[0] for e in c.xclaim(key, "g", "c2", 0, ["2-0"])] == ["2-0"]
    assert c.xautoclaim(key, "g", "c2", 0)[1]
    assert c.xgroup_createconsumer(key, "g", "c3") and c.xgroup_delconsumer(key, "g", "c3") == 0
    assert c.xinfo_groups(key)[0]["name"] == "g" and c.xlen(key) == 5
    b.set("shardex:events:0:epoch", "1")
    for call in (lambda: c.xadd(key, {"forged": "1"}), lambda: c.delete(key),
                 lambda: c.xadd(key, {"x": "1"}, maxlen=0), lambda: c.xtrim(key, 0),
                 lambda: c.xdel(key, "1-0"), lambda: c.execute_command("XSETID", key, "9-0"),
                 lambda: c.xgroup_destroy(key, "g"), lambda: c.xgroup_setid(key, "g", "0"),
                 lambda: c.set(key, "1"), lambda: c.get("shardex:events:0:epoch"),
                 lambda: c.flushall(), lambda: c.keys("*"), lambda: c.eval("return 1", 0),
                 lambda: c.script_load("return 1")):  # fmt: skip
        noperm(call)
    # no stream made out of a write fence or a lease key (it would jam the bridge, the lease)
    for fence in ("shardex:events:1:epoch", "shardex:balances:0:epoch", "shardex:lease:0:epoch"):
        assert "permissions" in refused(
            lambda k=fence: c.xgroup_create(k, "g", id="0", mkstream=True)
        )
    assert b.xlen(key) == 5 and b.xrange(key)[0][1] == {"seq": "1"}


def test_bridge_user_cannot_overwrite_or_delete_a_stream_by_hand(acl_redis):
    """Regression: the bridge user could SET any stream key (``shardex:trades:XRP-USD`` became a
    string) and run GET/SET on any ``shardex:events|trades|balances`` key. Each command it
    holds is now allowed on its own keys only: XADD on streams, XRANGE/XREVRANGE/XLEN reading
    streams, GET/SET on the epoch fences; nothing deletes, trims, renames or expires a key, and
    a script of its own lends it nothing (Redis checks a script's commands as its caller)."""
    b = acl_redis.client("bridge")
    trades, events = "shardex:trades:XRP-USD", "shardex:events:1"
    b.xadd(trades, {"seq": "1"}, id="1-0")
    b.xadd(events, {"seq": "1"}, id="1-0")
    b.xadd("shardex:balances:0", {"seq": "1"}, id="1-0")
    assert b.set("shardex:balances:0:epoch", "2") and b.get("shardex:events:1:epoch") is None
    attacks = [
        lambda: b.set(trades, "x"), lambda: b.set(events, "x"), lambda: b.get(trades),
        lambda: b.set("shardex:balances:0", "x"), lambda: b.delete(trades),
        lambda: b.unlink(events), lambda: b.xtrim(events, 0), lambda: b.xdel(events, "1-0"),
        lambda: b.execute_command("XSETID", events, "99-0"), lambda: b.rename(trades, "shardex:x"),
        lambda: b.expire(events, 1), lambda: b.copy("shardex:trades:A", trades, replace=True),
        lambda: b.restore(trades, 0, b"x", replace=True), lambda: b.xadd("shardex:events:1:epoch",
                                                                      {"a": "1"}),
        lambda: b.xgroup_create(events, "g", id="0"), lambda: b.hset(trades, "a", "1"),
        lambda: b.execute_command("SCRIPT", "FLUSH"), lambda: b.function_load("#!lua name=x\n"),
        lambda: b.eval("return 1", 0), lambda: b.acl_setuser("bridge"),
    ]  # fmt: skip
    for call in attacks:
        noperm(call)
    overwrite = b.script_load("return redis.call('SET', KEYS[1], 'x')")
    for key in (trades, events):
        noperm(lambda k=key: b.evalsha(overwrite, 1, k))
    trim = b.script_load("return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)")
    noperm(lambda: b.evalsha(trim, 1, events))
    r = acl_redis.client("reader")
    assert r.type(trades) == "stream" and r.xlen(trades) == 1 and r.xlen(events) == 1


def test_lease_user_acts_on_each_lease_key_only_as_the_lease_does(acl_redis):
    """The lease user may touch ``shardex:lease:*`` only, and now each key only with what the
    lease does to it: DEL and PEXPIRE only the holder, INCR only the epoch counter, HSET only
    the epoch starts. Regression: it could DEL an epoch counter (the next leader would reuse
    an epoch), or make the starts hash a string (every later acquire fails)."""
    from shardex.lease import Lease
    from shardex.lease import connect as lease_connect

    url = acl_redis.users.url(acl_redis.url, "lease")
    a = Lease(lease_connect(url), 0, "shard-0.r0", "tcp://a", ttl_ms=5000)
    assert a.try_acquire(0, 7) == (1, "ok") and a.renew() and a.set_isr(["shard-0.r0"])
    acc = Lease(lease_connect(url), 1, "accounts-0.r0", "tcp://b", ttl_ms=5000,
                name="accounts-0")  # fmt: skip
    assert acc.try_acquire(0, 0) == (1, "ok")
    assert a.holder_ttl()[0].node == "shard-0.r0" and a.isr() == ["shard-0.r0"]
    assert a.starts() == {1: 7}
    lease = acl_redis.client("lease")
    base = "shardex:lease:0"
    for call in (lambda: lease.delete(base + ":epoch"), lambda: lease.delete(base + ":isr"),
                 lambda: lease.delete(base + ":starts"), lambda: lease.set(base + ":starts", "x"),
                 lambda: lease.pexpire(base + ":isr", 1), lambda: lease.pexpire(base + ":epoch", 1),
                 lambda: lease.execute_command("INCR", base),
                 lambda: lease.hset(base, "1", "0"), lambda: lease.hset(base + ":epoch", "1", "0"),
                 lambda: lease.execute_command("INCR", base + ":isr"),
                 lambda: lease.xadd(base + ":x", {"a": "1"}), lambda: lease.xadd("shardex:events:0",
                                                                                 {"a": "1"}),
                 lambda: lease.get("shardex:events:0:epoch"), lambda: lease.keys("*")):  # fmt: skip
        noperm(call)
    a.release()
    assert lease.get(base) is None and lease.get(base + ":epoch") == "1"
    assert a.try_acquire(0, 0) == (2, "ok") and a.starts() == {1: 7, 2: 0}


def test_a_standby_reads_the_holders_time_left_as_the_lease_user(acl_redis):
    """Regression: the lease user could not PTTL, and a standby reads the holder's time left
    (``Lease.holder_ttl``: GET + PTTL of the holder key) to look again just after it runs out;
    as the lease user every such read was NOPERM. Asked here by a standby that does not hold
    the lease, with its own connection, as a replica's loop does."""
    from shardex.lease import Lease
    from shardex.lease import connect as lease_connect

    url = acl_redis.users.url(acl_redis.url, "lease")
    leader = Lease(lease_connect(url), 3, "shard-3.r0", "tcp://a", ttl_ms=5000)
    standby = Lease(lease_connect(url), 3, "shard-3.r1", "tcp://b", ttl_ms=5000)
    assert standby.holder_ttl() == (None, -2)  # no holder yet: no key
    assert leader.try_acquire(0, 0) == (1, "ok")
    holder, left = standby.holder_ttl()
    assert holder is not None and holder.node == "shard-3.r0" and 0 < left <= 5000
    leader.release()
    assert standby.holder_ttl() == (None, -2)


def test_acl_file_form_is_accepted(tmp_path):
    users = RedisUsers.ensure(tmp_path / "keys")
    for binary in sorted(set(BINARIES.values())):
        work = tmp_path / Path(binary).name
        work.mkdir()
        server = AclRedis(binary, users, work, aclfile=True)
        try:
            assert stat.S_IMODE((work / "users.acl").stat().st_mode) == 0o600
            assert server.client("bridge").xadd("shardex:events:0", {"a": "1"})
            assert "no permissions" in refused(lambda s=server: s.client("reader").xadd(
                "shardex:x", {"a": "1"}))  # fmt: skip
            with pytest.raises(redis.exceptions.AuthenticationError):
                server.client(None).ping()
        finally:
            server.stop()


# -- the bridge and tail as ACL users --------------------------------------------------------------


def test_bridge_writes_as_its_user_and_no_password_reaches_a_log(acl_redis, tmp_path):
    """The supervisor's way: ``--redis-url redis://bridge@…`` (no password on argv) and
    ``--keys-dir``; the bridge reads its password there, authenticates to the CURVE stand-in
    with its key, and writes exact streams that the reader can read."""
    keys = tmp_path / "keys"  # acl_redis's users live here too
    fake = FakeShards(1, keys_dir=str(keys))
    bridge = BridgeProc(fake, bridge_url(acl_redis.url), tmp_path, keys_dir=keys)
    r = acl_redis.client("reader")
    try:
        for k in range(4):
            fake.publish(trade if k % 2 else accepted, 25)
        fake.publish(trade, 25, drop=True)
        fake.publish(trade, 25)
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)
        out = bridge.output()
        assert "redis://bridge:***@127.0.0.1" in out
        assert acl_redis.users.password("bridge") not in out
        assert acl_redis.users.password("bridge") not in " ".join(bridge.proc.args)
        assert "ALERT" not in out
    finally:
        bridge.stop()
        fake.stop()


def test_a_trimmed_stream_is_an_alert_and_the_bridge_still_writes_once(acl_redis, tmp_path):
    """What no ACL can refuse (it never sees arguments): a holder of the bridge's password runs
    ``XADD … MAXLEN 0`` and wipes ``shardex:events:0`` (the attack of the issue, done as the
    bridge user). Regression: that went unseen; the bridge now raises an ALERT naming the
    stream (XINFO STREAM's max-deleted-entry-id: it never trims without --maxlen), counts the
    forged entry as a conflict, and writes every later event exactly once."""
    keys = tmp_path / "keys"
    fake = FakeShards(1, keys_dir=str(keys))
    bridge = BridgeProc(fake, bridge_url(acl_redis.url), tmp_path, keys_dir=keys)
    r = acl_redis.client("reader")
    try:
        fake.publish(accepted, 10)
        wait_until(lambda: r.xlen("shardex:events:0") == 10, 30, "first events", bridge)
        b = acl_redis.client("bridge")
        b.xadd("shardex:events:0", {"forged": "1"}, id="11-0", maxlen=0)
        assert r.xlen("shardex:events:0") == 0  # wiped, its top id now 11-0
        fake.publish(accepted, 10)
        ids = [f"{s}-0" for s in range(12, 21)]  # event 11: its id was taken (a conflict)
        wait_until(lambda: [e[0] for e in r.xrange("shardex:events:0")] == ids, 30, "the rest",
                   bridge)  # fmt: skip
        wait_until(lambda: "11 entries were deleted from shardex:events:0" in bridge.output(), 30,
                   "the trim ALERT", bridge)  # fmt: skip
        out = bridge.output()
        assert "a foreign entry above this id tops the stream" in out
        assert r.xrange("shardex:events:0", "12-0", "12-0")[0][1]["seq"] == "12"
        assert out.count("entries were deleted from") == 1, "reported more than once"
        assert bridge.proc.poll() is None and "Traceback" not in out
    finally:
        bridge.stop()
        fake.stop()


def test_bridge_with_a_wrong_password_alerts_retries_and_recovers(tmp_path):
    """Redis refuses the bridge's credentials: one clear ALERT (password masked), no crash, no
    restart; once the server knows that password the bridge writes everything."""
    keys = tmp_path / "keys"
    other = RedisUsers.ensure(tmp_path / "other")  # the server's users: not the bridge's
    work = tmp_path / "redis"
    work.mkdir()
    server = AclRedis(redis_server_binary(), other, work)
    fake = FakeShards(1, keys_dir=str(keys))
    bridge = BridgeProc(fake, bridge_url(server.url), tmp_path, keys_dir=keys)
    try:
        fake.publish(trade, 40)
        wait_until(lambda: "refused the bridge's credentials" in bridge.output(), 20, "ALERT",
                   bridge)  # fmt: skip
        time.sleep(1.5)  # several refused retries (not a timing assert: it must just survive)
        assert bridge.proc.poll() is None
        assert bridge.output().count("refused the bridge's credentials") == 1  # said once
        # the operator fixes it: the server restarts with the cluster's users
        server.stop()
        server.users = RedisUsers.load(keys)
        server.start()
        fake.publish(trade, 40)
        r = server.client("reader")
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)
        out = bridge.output()
        assert out.count("bridge starting") == 1
        for pw in (*other.passwords.values(), *server.users.passwords.values()):
            assert pw not in out
    finally:
        bridge.stop()
        fake.stop()
        server.stop()


def test_tail_reads_as_reader_from_the_keys_dir(acl_redis, tmp_path):
    b = acl_redis.client("bridge")
    for i in range(1, 4):
        fields = {"price": "100.00", "qty": "1", "seq": str(i)}
        b.xadd("shardex:trades:BTC-USD", fields, id=f"{i}-0")
    keys = tmp_path / "keys"
    markets = ("BTC-USD",)
    # no --redis-url: the layout's URL as reader, password from the keys dir
    r = tail_connect(None, acl_redis.url, keys)
    assert r.connection_pool.connection_kwargs["username"] == "reader"
    recs = list(follow(r, "BTC-USD", markets, from_start=True, count=3))
    assert [rec["seq"] for rec in recs] == [1, 2, 3]
    # --redis-url naming the user only: password from the keys dir; a full URL used as given
    assert tail_url("redis://reader@h:1/0", "x", keys) == acl_redis.users.url("redis://h:1/0",
                                                                              "reader")  # fmt: skip
    assert tail_url("rediss://u:p@h:1/0", "x", keys) == "rediss://u:p@h:1/0"
    # no credentials: one clear line, no traceback
    with pytest.raises(TailError, match="reader"):
        next(follow(tail_connect(None, acl_redis.url, None), "BTC-USD", markets, True, 1))
    # a wrong password: the same clear line
    wrong = with_credentials(acl_redis.url, "reader", "nope" * 8)
    with pytest.raises(TailError, match="refused the credentials"):
        next(follow(tail_connect(wrong, "x", None), "BTC-USD", markets, True, 1))


def test_bridge_and_tail_over_tls_with_rediss_urls(tmp_path):
    """``rediss://`` is honoured end to end: a TLS-only server (no plain port), the bridge given
    ``rediss://bridge@…?ssl_ca_certs=…`` (password from the keys dir, query kept), tail reading
    as reader over TLS."""
    keys = tmp_path / "keys"
    users = RedisUsers.ensure(keys)
    work = tmp_path / "redis"
    work.mkdir()
    try:
        server = AclRedis(redis_server_binary(), users, work, tls=self_signed(tmp_path / "tls"))
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            require(False, f"this redis-server has no TLS: {exc}")
        raise
    fake = FakeShards(1, keys_dir=str(keys))
    bridge = BridgeProc(fake, bridge_url(server.url), tmp_path, keys_dir=keys)
    try:
        assert bridge_url(server.url).startswith("rediss://bridge@127.0.0.1:")
        fake.publish(trade, 30)
        r = tail_connect(None, server.url, keys)
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)
        recs = list(follow(r, "BTC-USD", ("BTC-USD",), from_start=True, count=30))
        assert [rec["seq"] for rec in recs] == list(range(1, 31))
        pw = users.password("reader")
        plain = redis.Redis(port=server.port, username="reader", password=pw,
                            socket_connect_timeout=2, socket_timeout=2)  # fmt: skip
        with pytest.raises(redis.exceptions.ConnectionError):
            plain.ping()  # TLS only: a plain connection gets nowhere
        assert "rediss://bridge:***@127.0.0.1" in bridge.output()
        assert users.password("bridge") not in bridge.output()
    finally:
        bridge.stop()
        fake.stop()
        server.stop()


def test_the_lease_user_may_read_the_stores_clock(acl_redis):
    """A replica compares its wall clock with the lease store's when it starts
    (``shardex.coord.skew``), as the lease user. Regression: TIME was NOPERM for it, so a
    secure cluster never checked (the check said only "could not compare")."""
    from shardex.coord.skew import check_store_clock
    from shardex.lease import connect as lease_connect

    client = lease_connect(acl_redis.users.url(acl_redis.url, "lease"))
    offset = check_store_clock(client)
    assert offset is not None and abs(offset) < 1000  # (one box: one clock)
