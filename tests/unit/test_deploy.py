"""The container image and the Kubernetes manifests (docs/deploy.md), checked offline: the
manifests against the Kubernetes API schemas (kubernetes-validate ships them), every container's
command line through the same parsing and config its process runs, the committed example
against the generator, and the Dockerfile statically."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from shardex.auth import ADMIN_KEY_FILE, KeyStore
from shardex.cli import COMMANDS, main
from shardex.cli.accounts import accounts_config
from shardex.cli.bridge import bridge_config
from shardex.cli.deploy import deploy
from shardex.cli.engine import engine_config
from shardex.cli.gateway import gateway_config
from shardex.cli.options import LAYOUT_RANGES, layout_options
from shardex.cli.router import router_config
from shardex.cli.up import up
from shardex.deploy import k8s
from shardex.deploy.bundle import manifests
from shardex.deploy.k8s import Spec
from shardex.deploy.keys import process_keys, secret_dir
from shardex.deploy.render import render
from shardex.deploy.yamltext import dump_all
from shardex.kinds.spec import port_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "k8s"
EXAMPLE_SPEC = Spec(shards=2, accounts=1, replicas=2, routers=2, gateways=2)
# the oldest Kubernetes the manifests are for (the pod-index label: 1.28) and the newest
# schemas the validator ships
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
PERP_MARKETS = '[markets.BTCPERP-USD]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n'
# every optional object: the history writer and (a perp market) the price feed
# (and the leases in the Redis pod, the other coordination)
FULL_SPEC = Spec(shards=2, accounts=1, replicas=2, routers=1, gateways=1, markets=PERP_MARKETS,
                 history=True, coord="redis")  # fmt: skip
SPECS = (
    EXAMPLE_SPEC,
    Spec(shards=1, accounts=0, replicas=1, routers=1, gateways=0),
    Spec(shards=3, accounts=2, replicas=2, routers=2, gateways=1),
    FULL_SPEC,
)


def _docs(spec: Spec) -> list[dict[str, Any]]:
    return [d for docs in manifests(spec).values() for d in docs]


def _pods(spec: Spec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its container) for every StatefulSet and Deployment of a shardex process
    (not etcd's)."""
    return [(d, d["spec"]["template"]["spec"]["containers"][0]) for d in _docs(spec)
            if d["kind"] in ("StatefulSet", "Deployment")
            and d["metadata"]["name"] != k8s.name("etcd")]  # fmt: skip


def test_the_committed_example_is_what_the_generator_writes():
    files = render(EXAMPLE_SPEC)
    assert sorted(p.name for p in EXAMPLE.glob("*.yaml")) == sorted(files), (
        "deploy/k8s is stale: python -m shardex.cli deploy k8s --shards 2 --accounts 1 "
        "--replicas 2 --routers 2 --gateways 2 --out deploy/k8s"
    )
    for name, text in files.items():
        assert (EXAMPLE / name).read_text() == text, f"deploy/k8s/{name} is stale"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"n{s.shards}m{s.accounts}r{s.replicas}")
def test_every_object_is_valid_against_the_kubernetes_api_schemas(spec: Spec):
    text = "".join(render(spec).values())
    docs = list(yaml.safe_load_all(text))
    assert docs == _docs(spec)  # the YAML reads back as exactly the objects generated
    # one object per kind and component (shard i's differ from shard 0's only in values);
    # strict: a misspelt or misplaced field is an error, not ignored
    shapes = {(d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"]): d
              for d in docs}  # fmt: skip
    for version in K8S_VERSIONS if spec == EXAMPLE_SPEC else K8S_VERSIONS[-1:]:
        for doc in shapes.values():
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_would_catch_a_broken_manifest():
    sts = next(d for d in _docs(EXAMPLE_SPEC) if d["kind"] == "StatefulSet")
    broken = json.loads(json.dumps(sts))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5655"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = json.loads(json.dumps(sts))
    broken["spec"]["antiAffinity"] = {}  # not where it goes
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def _labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("spec", SPECS[::2], ids=("example", "n3m2"))
def test_each_shard_is_a_statefulset_whose_replicas_never_share_a_node(spec: Spec):
    docs = _docs(spec)
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    shards = [k8s.name("engine", i) for i in range(spec.shards)]
    shards += [k8s.name("accounts", j) for j in range(spec.accounts)]
    for name in shards:
        sts = sets[name]
        labels = _labels(sts)
        assert sts["spec"]["replicas"] == spec.replicas == 2
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        (rule,) = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]  # fmt: skip
        assert rule == {"labelSelector": {"matchLabels": labels},
                        "topologyKey": "kubernetes.io/hostname"}  # fmt: skip
        # only this shard's pods: another shard's replicas may share a node with these
        others = [_labels(s) for n, s in sets.items() if n != name]
        assert all(not labels.items() <= o.items() for o in others)
        svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
        assert sts["spec"]["serviceName"] == name and svc["spec"]["selector"] == labels
        pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget"
                   and d["metadata"]["name"] == name)  # fmt: skip
        assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": labels}}


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _selects(selector: dict[str, Any], docs: list[dict[str, Any]]) -> set[str]:
    """Names of the workloads whose pods ``selector`` (a matchLabels selector) picks."""
    want = selector["matchLabels"].items()
    return {d["metadata"]["name"] for d in docs if d["kind"] in ("StatefulSet", "Deployment")
            and want <= _labels(d).items()}  # fmt: skip


def _flag(args: list[str], flag: str) -> str:
    """The value of ``--flag=value`` in an etcd command line."""
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return value


def test_the_leases_live_in_three_etcd_members_on_three_nodes():
    """By default every replica's lease is in a 3-member etcd whose members resolve through
    its headless Service, never share a node, drain one at a time and compact."""
    docs = _docs(EXAMPLE_SPEC)
    obj = k8s.name("etcd")
    sts, svc = _named(docs, "StatefulSet", obj), _named(docs, "Service", obj)
    pdb = _named(docs, "PodDisruptionBudget", obj)
    members = sts["spec"]["replicas"]
    assert members == 3 and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    # a StatefulSet pod is NAME-K, resolvable as NAME-K.SERVICE: the names the URL and the
    # initial cluster use are exactly those
    peers = [f"{obj}-{k}.{svc['metadata']['name']}" for k in range(members)]
    url = "etcd://" + ",".join(f"{p}:2379" for p in peers)
    shards = [b for _, b in _pods(EXAMPLE_SPEC) if b["name"] in ("engine", "accounts")]
    assert len(shards) == 3
    assert all(b["args"][b["args"].index("--redis-url") + 1] == url for b in shards)
    box = sts["spec"]["template"]["spec"]["containers"][0]
    initial = _flag(box["args"], "--initial-cluster")
    assert initial == ",".join(f"{obj}-{k}=http://{p}:2380" for k, p in enumerate(peers))
    assert _flag(box["args"], "--initial-advertise-peer-urls") == (
        f"http://$(POD_NAME).{obj}:2380")  # fmt: skip
    assert _flag(box["args"], "--auto-compaction-retention") and int(
        _flag(box["args"], "--quota-backend-bytes")) > 0  # fmt: skip
    assert box["volumeMounts"][0]["mountPath"] in _flag(box["args"], "--data-dir")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (rule,) = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]  # fmt: skip
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    for selector in (rule["labelSelector"], pdb["spec"]["selector"],
                     {"matchLabels": svc["spec"]["selector"]}):  # fmt: skip
        assert _selects(selector, docs) == {obj}  # etcd's pods, and nothing else
    assert pdb["spec"]["maxUnavailable"] == 1


def test_the_leases_in_redis_or_none_without_replicas_need_no_etcd():
    assert "etcd.yaml" not in manifests(FULL_SPEC)  # --coord redis
    lease = f"redis://lease@{k8s.name('redis')}:{FULL_SPEC.layout.redis_port}/0"
    engines = [box for _, box in _pods(FULL_SPEC) if box["name"] == "engine"]
    assert engines and all(b["args"][b["args"].index("--redis-url") + 1] == lease
                           for b in engines)  # fmt: skip
    assert "etcd.yaml" not in manifests(SPECS[1])  # one replica: no lease at all
    assert "--coord redis" in render(FULL_SPEC)["redis.yaml"].splitlines()[0]
    res = CliRunner().invoke(main, ["deploy", "k8s", "--coord", "redis"])
    assert res.exit_code == 0 and "etcd" not in res.output and "lease@" in res.output
    res = CliRunner().invoke(main, ["deploy", "k8s", "--coord", "zookeeper"])
    assert res.exit_code == 2 and "--coord" in res.output


def test_two_routers_by_default_spread_over_nodes_and_drained_one_at_a_time():
    res = CliRunner().invoke(main, ["deploy", "k8s"])
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all(res.output))
    routers = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"].startswith(k8s.name("router"))}  # fmt: skip
    assert routers == {k8s.name("router", 0), k8s.name("router", 1)}
    pdb = _named(docs, "PodDisruptionBudget", k8s.name("router"))
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _selects(pdb["spec"]["selector"], docs) == routers
    for obj in routers:
        (pref,) = _named(docs, "Deployment", obj)["spec"]["template"]["spec"]["affinity"][
            "podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]  # fmt: skip
        term = pref["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert _selects(term["labelSelector"], docs) == routers


# docs/deploy.md "Keys across hosts": the files of the Secret each component is given
CURVE = {"server.key", "registry.json"}
DOCUMENTED_KEYS = {
    "engine": CURVE | {"shard-{i}.key"}, "accounts": CURVE | {"accounts-{i}.key"},
    "router": CURVE, "bridge": CURVE | {"bridge.key", "redis.json"},
    "gateway": CURVE | {"gateway.key", "redis.json"},
    "candles": CURVE | {"candles-worker.key", "redis.json"}, "feed": CURVE | {"feed.key"},
    "history": {"redis.json"}, "redis": {"redis.json"},
}  # fmt: skip


@pytest.mark.parametrize("spec", (EXAMPLE_SPEC, FULL_SPEC), ids=("etcd", "redis"))
def test_each_pod_is_given_only_the_keys_its_process_needs(spec: Spec, tmp_path):
    """Not the whole Secret: a pod taken over gives away its own keys only. The shards need
    the Redis passwords only while their lease is in Redis; every file named is in the Secret
    ``shardex deploy keys`` makes (else the pod would not start)."""
    made = set(secret_dir(tmp_path / "store", tmp_path / "out", spec.shards, spec.accounts))
    seen = set()
    for workload, _box in _pods(spec):
        labels = _labels(workload)
        component = labels["app.kubernetes.io/component"]
        want = {f.format(i=labels.get("shardex.io/index")) for f in DOCUMENTED_KEYS[component]}
        if component in ("engine", "accounts") and spec.coord == "redis":
            want.add("redis.json")
        (vol,) = [v for v in workload["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "secret"]  # fmt: skip
        items = vol["secret"]["items"]
        assert {i["key"] for i in items} == want, workload["metadata"]["name"]
        assert all(i["path"] == i["key"] for i in items) and want <= made
        seen.add(component)
    assert seen == set(DOCUMENTED_KEYS) - ({"feed", "history"} if spec is EXAMPLE_SPEC else set())


def test_probes_ask_healthz_on_the_port_prometheus_scrapes():
    for workload, box in _pods(EXAMPLE_SPEC):
        meta = workload["spec"]["template"]["metadata"]
        if box["name"] == "redis":  # no exporter: its port
            assert "tcpSocket" in box["readinessProbe"] and "annotations" not in meta
            continue
        port = int(meta["annotations"]["prometheus.io/port"])
        assert meta["annotations"]["prometheus.io/scrape"] == "true"
        assert box["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert box["livenessProbe"]["httpGet"] == {"path": "/healthz?live=1", "port": port}
        assert port in [p["containerPort"] for p in box["ports"]]
        env = {e["name"]: e.get("value") for e in box["env"]}
        assert env["SHARDEX_METRICS_HOST"] == "0.0.0.0"  # the kubelet reaches the exporter


def test_keys_come_from_a_secret_that_is_never_in_the_manifests():
    text = "".join(render(EXAMPLE_SPEC).values())
    docs = _docs(EXAMPLE_SPEC)
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert "password" not in text.lower() and "-----" not in text  # no credentials
    for workload, box in _pods(EXAMPLE_SPEC):
        pod = workload["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["secret"]["secret"]["secretName"] == k8s.SECRET
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert box["args"][box["args"].index("--keys-dir") + 1] == k8s.KEYS


def _pod_args(box: dict[str, Any], pod_name: str, paths: dict[str, str]) -> list[str]:
    """The container's args as the kubelet runs them: $(VAR) expanded, and the pod's paths
    (data, keys, markets) moved to ``paths``."""
    replica = pod_name.rsplit("-", 1)[1]
    env = {"POD_NAME": pod_name, k8s.REPLICA_ENV: replica}
    out = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in box["args"]]
    return [paths.get(a, a) for a in out]


def _parse(argv: list[str]) -> dict[str, Any]:
    cmd = main.get_command(click.Context(main), argv[0])
    assert cmd is not None, argv[0]
    with cmd.make_context(argv[0], list(argv[1:])) as ctx:
        return dict(ctx.params)


CONFIGS = {"engine": engine_config, "accounts": accounts_config, "bridge": bridge_config,
           "gateway": gateway_config, "router": lambda **o: router_config(**o)}  # fmt: skip


@pytest.mark.parametrize("spec", (FULL_SPEC, EXAMPLE_SPEC), ids=("redis", "etcd"))
def test_every_container_runs_a_command_its_process_accepts(spec: Spec, tmp_path):
    """Each container's command line, as its pod runs it, parses and makes a config (the
    replicas' advertised names are their pods' DNS names; their lease in Redis or etcd), with
    only the keys its pod is given."""
    secret = tmp_path / "secret"
    secret_dir(tmp_path / "store", secret, spec.shards, spec.accounts)
    mfile = tmp_path / "markets.toml"
    mfile.write_text(manifests(spec)["markets.yaml"][0]["data"]["markets.toml"])
    paths = {k8s.MARKETS: str(mfile)}
    seen = set()
    for workload, box in _pods(spec):
        assert box["command"] == ["shardex"] and box["args"][0] in COMMANDS
        keys = tmp_path / "keys" / workload["metadata"]["name"]  # what the init container copies
        keys.mkdir(parents=True)
        (vol,) = [v for v in workload["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "secret"]  # fmt: skip
        for item in vol["secret"]["items"]:
            shutil.copyfile(secret / item["key"], keys / item["path"])
        paths[k8s.KEYS] = str(keys)
        for r in range(workload["spec"]["replicas"]):
            pod = f"{workload['metadata']['name']}-{r}"
            paths[k8s.DATA] = str(tmp_path / "data" / pod)
            params = _parse(_pod_args(box, pod, paths))
            kind = box["args"][0]
            seen.add(kind)
            if kind not in CONFIGS:
                continue
            made = CONFIGS[kind](**params)
            cfg, rep = made if isinstance(made, tuple) else (made, None)
            if kind in ("engine", "accounts"):
                host = f"{pod}.{workload['metadata']['name']}"
                assert rep is not None and rep.replica == r
                assert rep.repl_at.startswith(f"tcp://{host}:")
                direct = cfg.extra.get("direct") or cfg.extra.get("direct_ep") or ""
                assert host in json.dumps(cfg.extra), (kind, cfg.extra, direct)
    optional = {"history-writer", "feed"} if spec is EXAMPLE_SPEC else set()
    assert seen == {"redis", "router", "engine", "accounts", "bridge", "gateway",
                    "candles-worker", "history-writer", "feed"} - optional  # fmt: skip


def test_workers_come_with_what_asks_for_them_and_the_database_url_from_a_secret():
    """Candles always; the feed only with a perp market; the history writer only when asked
    and with the account tier, its PostgreSQL URL (a password) never in the manifests."""
    assert {"candles.yaml"} <= set(manifests(EXAMPLE_SPEC))
    assert not {"feed.yaml", "history.yaml"} & set(manifests(EXAMPLE_SPEC))
    assert {"candles.yaml", "feed.yaml", "history.yaml"} <= set(manifests(FULL_SPEC))
    no_tier = Spec(accounts=0, history=True)
    assert "history.yaml" not in manifests(no_tier)
    (dep,) = manifests(FULL_SPEC)["history.yaml"]
    box = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in box["env"]}
    ref = env["SHARDEX_HISTORY_DB"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "shardex-history-db", "key": "url"}
    assert "--history-db" not in box["args"] and "postgresql" not in json.dumps(dep)
    for fname in ("candles.yaml", "feed.yaml", "history.yaml"):
        (dep,) = manifests(FULL_SPEC)[fname]
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    res = CliRunner().invoke(main, ["deploy", "k8s", "--accounts", "0", "--history"])
    assert res.exit_code == 2 and "needs the account tier" in res.output


def test_network_policies_deny_by_default_and_open_the_client_doors_and_exporters():
    pols = {p["metadata"]["name"]: p["spec"] for p in manifests(FULL_SPEC)["policies.yaml"]}
    everyone = {"matchLabels": {"app.kubernetes.io/name": "shardex"}}
    assert all(p["podSelector"] == everyone for p in pols.values())
    assert pols["shardex-default-deny"]["ingress"] == []
    assert pols["shardex-internal"]["ingress"] == [{"from": [{"podSelector": everyone}]}]
    lay = FULL_SPEC.layout
    doors = {p["port"] for p in pols["shardex-client-doors"]["ingress"][0]["ports"]}
    assert doors == {lay.base_port, lay.gateway_port(0)}  # router clients, gateway HTTP
    metrics = {p["port"] for p in pols["shardex-metrics"]["ingress"][0]["ports"]}
    for workload, _box in _pods(FULL_SPEC):  # every scraped port is open to Prometheus
        ann = workload["spec"]["template"]["metadata"].get("annotations")
        if ann:
            port = int(ann["prometheus.io/port"])
            assert port in metrics or port in doors, workload["metadata"]["name"]
    # (a shard's replication, link and direct ports: only from the cluster's own pods)
    assert not {port_of(lay.repl(0, 0)), port_of(lay.account_link(0))} & (metrics | doors)


def test_deploy_keys_issues_every_process_key_and_leaves_the_admin_key_out(tmp_path):
    store, out = tmp_path / "store", tmp_path / "secret"
    names = secret_dir(store, out, 2, 1)
    assert ADMIN_KEY_FILE not in {p.name for p in out.iterdir()}
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all(p.stat().st_mode & 0o077 == 0 for p in out.iterdir())
    registry = KeyStore(out).registry()
    for name, role, _ in process_keys(2, 1):
        kf = KeyStore(out).process_key(name, role)  # read, not issued again: already live
        info = registry.lookup(kf.public)
        assert info is not None and info.role == role
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    secret_dir(store, out, 2, 1)  # again: the same keys
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_command_writes_files_and_refuses_a_bad_markets_file(tmp_path):
    run = CliRunner().invoke
    res = run(main, ["deploy", "k8s", "--shards", "2", "--accounts", "1", "--gateways", "2",
                     "--out", str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 0, res.output
    for name, text in render(EXAMPLE_SPEC).items():
        assert (tmp_path / "out" / name).read_text() == text
    bad = tmp_path / "bad.toml"
    bad.write_text("[markets.X-Y]\ntick = 1\n")
    res = run(main, ["deploy", "k8s", "--markets", str(bad)])
    assert res.exit_code == 2 and "needs tick and lot" in res.output
    good = tmp_path / "m.toml"
    good.write_text('[markets.ABC-USD]\ntick = "0.5"\nlot = "1"\n')
    res = run(main, ["deploy", "k8s", "--markets", str(good)])
    assert res.exit_code == 0 and "markets.ABC-USD" in res.output
    assert run(main, ["deploy", "k8s", "--help"]).exit_code == 0


def test_yaml_writer_keeps_types_and_blocks():
    doc = {"a": "true", "b": True, "c": 7, "d": "0400", "e": "x\ny\n", "f": [], "g": {},
           "h": [{"i": ["j", {"k": "$(POD_NAME)"}]}], "we ird": "v"}  # fmt: skip
    assert yaml.safe_load(dump_all([doc]).removeprefix("---\n")) == doc


# -- the image ----------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_runs_every_kind_as_shardex_as_a_user_with_data_and_keys_as_volumes():
    steps = _instructions((ROOT / "Dockerfile").read_text())
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    words = dict(final)  # the run stage's (last of each)
    assert steps[0] == ("ARG", "PYTHON=python:3.11-slim")
    assert words["FROM"] == "${PYTHON}"
    user = words["USER"].split(":")[0]
    assert user not in ("root", "0") and int(user) == k8s.UID
    assert set(json.loads(words["VOLUME"])) == {k8s.DATA, k8s.KEYS}
    assert json.loads(words["ENTRYPOINT"]) == ["shardex"]
    assert "shardex.health" in words["HEALTHCHECK"]
    # every kind the manifests run is a command of that entrypoint
    kinds = {box["args"][0] for _, box in _pods(SPECS[2])}
    assert kinds <= set(COMMANDS)
    # the image's ports are the layout's the manifests use
    exposed = {int(p) for p in words["EXPOSE"].split()}
    used = {p["containerPort"] for _, box in _pods(EXAMPLE_SPEC) for p in box["ports"]}
    assert used - exposed == {5656, 5756, 5856, 5956, 6656}  # engine shard 1's: shard 0's + 1
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*")] == "*" and "!shardex/" in ignored


def test_up_and_deploy_take_the_layout_counts_in_the_same_ranges():
    """``shardex up`` and ``shardex deploy k8s|keys`` share one definition of the layout's
    counts (``shardex.cli.options.layout_options``): the same option, the same range."""
    commands = {"up": up, **deploy.commands}
    seen = set()
    for name, command in commands.items():
        for param in command.params:
            count = param.name if param.name in LAYOUT_RANGES else None
            if count and isinstance(param.type, click.IntRange):
                assert (param.type.min, param.type.max) == LAYOUT_RANGES[count], (name, count)
                seen.add((name, count))
    assert {("k8s", c) for c in LAYOUT_RANGES} | {("keys", "shards"), ("keys", "accounts")} <= seen
    assert {("up", c) for c in ("accounts", "replicas", "routers", "gateways")} <= seen
    with pytest.raises(ValueError, match="not layout counts"):
        layout_options(shard="a typo")
