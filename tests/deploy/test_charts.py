"""The Helm charts, rendered by Helm's own engine and validated against Kubernetes' schemas.

Rendering uses ``helm-python-sdk`` (PyPI), which binds Helm v4's Go SDK (``libhelm_c``)
through ctypes, in a child process (``helmrender``): no ``helm`` binary can be downloaded
here, and none ships in PyPI, Debian or npm for Linux. Every rendered manifest is
validated with ``kubernetes-validate`` (strict: unknown fields fail) against the oldest
Kubernetes version the charts claim and a recent one. Each chart is rendered with its
default values and with the production-like ``ci/production-values.yaml``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orrery_spoke_agent.executor.kubernetes.config import KubeConfig
from tests.deploy.helmrender import Helm

if importlib.util.find_spec("helm_python") is None:
    pytest.skip("helm-python-sdk (Helm's Go SDK) is not installed", allow_module_level=True)
kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "deploy" / "helm"
KUBE_VERSIONS = ["1.27.0", "1.35.0"]
# The spoke chart has four required values; "defaults" means only those.
DEFAULTS: dict[str, dict[str, Any]] = {
    "orrery-spoke": {"hub": {"nats": "tls://orrery-hub-nats.orrery-system.svc:4222"},
                     "cluster": "kube-a",
                     "join": {"hubUrl": "http://orrery-orrery-hub.orrery-system.svc:8080",
                              "tokenSecret": {"name": "orrery-join"}}},
    "orrery-hub": {},
}
CASES = [(chart, which) for chart in DEFAULTS for which in ("defaults", "production")]


def values(chart: str, which: str) -> dict[str, Any]:
    if which == "defaults":
        return DEFAULTS[chart]
    data = yaml.safe_load((CHARTS / chart / "ci" / "production-values.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def helm() -> Iterator[Helm]:
    h = Helm()
    yield h
    h.close()


def render(helm: Helm, chart: str, vals: dict[str, Any]) -> list[dict[str, Any]]:
    answer = helm.call("render", str(CHARTS / chart), vals)
    assert "ok" in answer, answer
    out: dict[str, str] = answer["ok"]
    docs = []
    for path, text in sorted(out.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


@pytest.mark.parametrize(("chart", "which"), CASES)
def test_rendered_manifests_validate_against_kubernetes_schemas(helm: Helm, chart: str,
                                                                which: str) -> None:
    docs = render(helm, chart, values(chart, which))
    assert docs, "nothing rendered"
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{chart} ({which}) {doc['kind']}/{doc['metadata']['name']} "
                            f"against {version}: {where}: {exc.message}")


@pytest.mark.parametrize(("chart", "which"), CASES)
def test_helm_lint_is_clean(helm: Helm, chart: str, which: str) -> None:
    answer = helm.call("lint", str(CHARTS / chart), values(chart, which))
    assert "ok" in answer, answer
    report = answer["ok"]
    errors = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    assert not errors, errors
    assert not report.get("errors"), report["errors"]


@pytest.mark.parametrize(("chart", "bad", "field"), [
    ("orrery-spoke", {"cluster": "Not_A_Name"}, "cluster"),
    ("orrery-spoke", {"hub": {"nats": "http://x"}}, "nats"),
    ("orrery-spoke", {"lease": -1}, "lease"),
    ("orrery-spoke", {"surprise": 1}, "surprise"),
    ("orrery-hub", {"database": {"url": "mysql://x"}}, "url"),
    ("orrery-hub", {"service": {"type": "Ingress"}}, "type"),
])
def test_values_schema_refuses_bad_values(helm: Helm, chart: str, bad: dict[str, Any],
                                          field: str) -> None:
    answer = helm.call("render", str(CHARTS / chart), {**DEFAULTS[chart], **bad})
    assert answer.get("error") == "HelmValuesError", answer
    assert field in answer["message"]


def test_spoke_requires_the_hub_and_a_cluster_name(helm: Helm) -> None:
    answer = helm.call("render", str(CHARTS / "orrery-spoke"), {"cluster": "kube-a"})
    assert answer.get("error") == "HelmRenderError", answer
    assert "hub.nats is required" in answer["message"]


@pytest.mark.parametrize("which", ["defaults", "production"])
def test_spoke_is_one_agent_with_least_privilege(helm: Helm, which: str) -> None:
    vals = values("orrery-spoke", which)
    by = kinds(render(helm, "orrery-spoke", vals))
    (deploy,) = by["Deployment"]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    (cluster_role,) = by["ClusterRole"]
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, "cluster-wide: read only"
        assert set(rule["resources"]) <= {"nodes", "pods"}
    roles = {r["metadata"]["name"].rsplit("-", 1)[-1]: r for r in by["Role"]}
    role = roles["jobs"]
    slices_ns = (vals.get("slices") or {}).get("namespace") or "orrery-system"
    assert role["metadata"]["namespace"] == slices_ns
    jobs = [r for r in role["rules"] if "jobs" in r["resources"]]
    assert jobs and "delete" in jobs[0]["verbs"] and "create" in jobs[0]["verbs"]
    pods = [r for r in role["rules"] if "pods" in r["resources"]]
    # The agent reads its slices' pods and deletes one that left its Job; nothing else.
    assert pods and set(pods[0]["verbs"]) == {"get", "list", "watch", "delete"}
    # Slices hold no permission: no Role but the agent's, no account made for them.
    assert set(roles) == {"jobs"}
    assert {b["subjects"][0]["name"] for b in by["RoleBinding"]} == {
        deploy["spec"]["template"]["spec"]["serviceAccountName"]}
    assert not [s for s in by["ServiceAccount"] if s["metadata"]["name"].endswith("-slice")]
    (config,) = [c for c in by["ConfigMap"] if "kube-executor.yaml" in c["data"]]
    cfg = KubeConfig.model_validate(yaml.safe_load(config["data"]["kube-executor.yaml"]))
    assert cfg.service_account == ((vals.get("slices") or {}).get("serviceAccount") or None)
    # Progress reaches the agent through its Service, on the port the agent listens on.
    (svc,) = [s for s in by["Service"] if s["metadata"]["name"].endswith("-progress")]
    port = svc["spec"]["ports"][0]["port"]
    assert cfg.progress_listen == f"0.0.0.0:{port}"
    assert cfg.progress_url == (
        f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{port}")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "progress", "containerPort": port} in container["ports"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--executor=kubernetes" in args
    assert f"--namespace={slices_ns}" in args


@pytest.mark.parametrize("which", ["defaults", "production"])
def test_spoke_configmap_is_what_the_executor_reads(helm: Helm, which: str) -> None:
    vals = values("orrery-spoke", which)
    (cm,) = kinds(render(helm, "orrery-spoke", vals))["ConfigMap"]
    cfg = KubeConfig.model_validate(yaml.safe_load(cm["data"]["kube-executor.yaml"]))
    slices = vals.get("slices") or {}
    if "tolerations" in slices:
        assert cfg.tolerations == slices["tolerations"]
    if "volumes" in slices:
        assert cfg.volumes == slices["volumes"]
    assert cfg.pending_timeout_s == slices.get("pendingTimeoutS", 300)


def test_hub_defaults_sqlite_on_a_volume_and_its_own_nats(helm: Helm) -> None:
    by = kinds(render(helm, "orrery-hub", {}))
    (pvc,) = by["PersistentVolumeClaim"]
    (hub,) = [d for d in by["Deployment"] if d["metadata"]["name"] == "orrery-orrery-hub"]
    spec = hub["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # Its own nats-server, beside it in the pod, with TLS from the configuration it writes.
    assert "--nats=tls://localhost:4222" in spec["containers"][0]["args"]
    assert "--manage-nats" in spec["containers"][0]["args"]
    assert {s["metadata"]["name"] for s in by["Service"]} == {
        "orrery-orrery-hub", "orrery-orrery-hub-nats"}
    assert "Secret" not in by


def test_hub_nats_runs_with_tls_from_the_hub_state_which_is_persistent(helm: Helm) -> None:
    own_nats = {"nats": {"tls": {"hosts": ["n.example.com"]}}}
    for vals in ({}, values("orrery-hub", "production") | own_nats):
        by = kinds(render(helm, "orrery-hub", vals))
        (hub,) = by["Deployment"]
        spec = hub["spec"]["template"]["spec"]
        assert spec["shareProcessNamespace"] is True  # the hub reloads nats-server (SIGHUP)
        (init,) = spec["initContainers"]
        assert init["command"][:4] == ["python", "-m", "orrery_hub.identity", "init"]
        assert "--san=orrery-orrery-hub-nats.orrery-system.svc" in init["args"]
        nats = next(c for c in spec["containers"] if c["name"] == "nats")
        assert nats["args"][:2] == ["-c", "/var/lib/orrery/identity/nats.conf"]
        state = {v["name"]: v for v in spec["volumes"]}["state"]
        (pvc,) = by["PersistentVolumeClaim"]  # the CA keys survive a restart
        assert state["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        (svc,) = [s for s in by["Service"] if s["metadata"]["name"].endswith("-nats")]
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "hub"
    assert "--san=n.example.com" in init["args"]
    c = spec["containers"][0]
    assert "--tls-cert=/etc/orrery/tls/tls.crt" in c["args"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {v["name"]: v for v in spec["volumes"]}["api-tls"]["secret"]["secretName"] == \
        "orrery-hub-tls"


def test_hub_production_uses_postgres_from_a_secret_and_external_nats(helm: Helm) -> None:
    by = kinds(render(helm, "orrery-hub", values("orrery-hub", "production")))
    # The state volume now holds only the hub's identity (CA, order key), not a database.
    (pvc,) = by["PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    (hub,) = by["Deployment"]  # no NATS of its own
    c = hub["spec"]["template"]["spec"]["containers"][0]
    db = next(e for e in c["env"] if e["name"] == "ORRERY_DB")
    assert db["valueFrom"]["secretKeyRef"] == {"name": "orrery-db", "key": "url"}
    assert "--nats=tls://nats.orrery-system.svc:4222" in c["args"]
    assert "--policies=/etc/orrery/policies" in c["args"]
    (cm,) = by["ConfigMap"]
    assert "residency.yaml" in cm["data"]


def test_hub_with_an_inline_postgres_url_keeps_it_in_a_secret(helm: Helm) -> None:
    url = "postgresql+psycopg://orrery:pw@db:5432/orrery"
    by = kinds(render(helm, "orrery-hub", {"database": {"url": url}}))
    (secret,) = by["Secret"]
    assert secret["stringData"]["url"] == url
    c = by["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "--db" not in " ".join(c["args"])  # not SQLite: the volume holds the identity only


# ---- enrollment: the join token from a Secret, the identity on a persistent volume ------


@pytest.mark.parametrize("which", ["defaults", "production"])
def test_spoke_enrolls_with_a_token_from_a_secret_and_keeps_its_identity(
    helm: Helm, which: str
) -> None:
    vals = values("orrery-spoke", which)
    docs = render(helm, "orrery-spoke", vals)
    by = kinds(docs)
    (deploy,) = by["Deployment"]
    spec = deploy["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["ORRERY_JOIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == vals["join"]["tokenSecret"]["name"]
    assert ref["key"] == vals["join"]["tokenSecret"].get("key", "token")
    assert "value" not in env["ORRERY_JOIN_TOKEN"]
    assert env["ORRERY_JOIN"]["value"] == vals["join"]["hubUrl"]
    if vals["join"].get("caHash"):
        assert env["ORRERY_CA_HASH"]["value"] == vals["join"]["caHash"]
    assert "--insecure" not in c["args"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["identity"] == "/var/lib/orrery/identity"
    (pvc,) = by["PersistentVolumeClaim"]
    vol = {v["name"]: v for v in spec["volumes"]}["identity"]
    assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert spec["securityContext"]["fsGroup"] == 65532
    size = ((vals.get("identity") or {}).get("persistence") or {}).get("size", "16Mi")
    assert pvc["spec"]["resources"]["requests"]["storage"] == size


def test_no_join_token_lands_in_a_configmap_or_a_plain_env_value(helm: Helm) -> None:
    token = "orrery-join.0123456789abcdef.s3cr3t"
    for vals in (DEFAULTS["orrery-spoke"], values("orrery-spoke", "production")):
        text = yaml.safe_dump(render(helm, "orrery-spoke", vals))
        assert "orrery-join." not in text and token not in text
        for d in render(helm, "orrery-spoke", vals):
            if d["kind"] == "ConfigMap":
                assert "token" not in yaml.safe_dump(d.get("data", {})).lower()
            if d["kind"] == "Deployment":
                for e in d["spec"]["template"]["spec"]["containers"][0]["env"]:
                    if "TOKEN" in e["name"]:
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"]
    # A token in values is refused by the schema: there is no field for it.
    bad = {**DEFAULTS["orrery-spoke"], "join": {"hubUrl": "http://h", "token": token}}
    answer = helm.call("render", str(CHARTS / "orrery-spoke"), bad)
    assert answer.get("error") == "HelmValuesError", answer


def test_spoke_requires_a_join_secret_unless_insecure(helm: Helm) -> None:
    base = {"hub": DEFAULTS["orrery-spoke"]["hub"], "cluster": "kube-a"}
    answer = helm.call("render", str(CHARTS / "orrery-spoke"), base)
    assert answer.get("error") == "HelmRenderError", answer
    assert "join.hubUrl is required" in answer["message"]
    no_secret = {**base, "join": {"hubUrl": "http://h"}}
    answer = helm.call("render", str(CHARTS / "orrery-spoke"), no_secret)
    assert "join.tokenSecret.name is required" in answer["message"]
    by = kinds(render(helm, "orrery-spoke", {**base, "insecure": True}))
    (c,) = by["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    assert "--insecure" in c["args"] and "PersistentVolumeClaim" not in by
    assert "ORRERY_JOIN_TOKEN" not in {e["name"] for e in c["env"]}
    bad = {**DEFAULTS["orrery-spoke"], "join": {"hubUrl": "http://h", "caHash": "md5:x"}}
    answer = helm.call("render", str(CHARTS / "orrery-spoke"), bad)
    assert answer.get("error") == "HelmValuesError" and "caHash" in answer["message"], answer


# ---- high availability: hub replicas on PostgreSQL, a NATS cluster --------------------

HA = {
    "ha": {"enabled": True, "identitySecret": "orrery-hub-identity"},
    "database": {"existingSecret": "orrery-db"},
    "nats": {"url": "tls://n-0:4222,tls://n-1:4222,tls://n-2:4222"},
}


def test_hub_ha_runs_replicas_with_a_leader_lease_on_postgres(helm: Helm) -> None:
    by = kinds(render(helm, "orrery-hub", HA))
    (hub,) = by["Deployment"]
    assert hub["spec"]["replicas"] == 2
    assert hub["spec"]["strategy"]["type"] == "RollingUpdate"  # never both down at once
    spec = hub["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert "--leader-lease=3" in c["args"]
    assert "--advertise-url=http://$(POD_IP):8080" in c["args"]
    assert "--nats=tls://n-0:4222,tls://n-1:4222,tls://n-2:4222" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["ORRERY_DB"]["valueFrom"]["secretKeyRef"]["name"] == "orrery-db"
    # No volume shared between replicas: the identity comes from a Secret, the rest of the
    # state is the pod's own; the database is PostgreSQL.
    assert "PersistentVolumeClaim" not in by
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["state"] == {"name": "state", "emptyDir": {}}
    assert vols["identity"]["secret"]["secretName"] == "orrery-hub-identity"
    (init,) = spec["initContainers"]
    assert "copytree" in " ".join(init["command"])
    assert [x["name"] for x in spec["containers"]] == ["hub"]  # NATS is the external cluster


@pytest.mark.parametrize(
    ("drop", "words"),
    [
        ("database", "set database.url or database.existingSecret"),
        ("nats", "set nats.url to an external NATS cluster"),
        ("identity", "set ha.identitySecret"),
    ],
)
def test_hub_ha_refuses_what_replicas_cannot_share(helm: Helm, drop: str, words: str) -> None:
    vals: dict[str, Any] = {k: dict(v) for k, v in HA.items()}
    if drop == "identity":
        vals["ha"] = {"enabled": True}
    else:
        del vals[drop]
    answer = helm.call("render", str(CHARTS / "orrery-hub"), vals)
    assert "error" in answer and words in answer["message"], answer


def test_hub_ha_manifests_validate(helm: Helm) -> None:
    for version in KUBE_VERSIONS:
        for doc in render(helm, "orrery-hub", HA):
            kv.validate(doc, version, strict=True)


def test_nats_cluster_values_for_the_official_chart() -> None:
    v = yaml.safe_load((CHARTS / "nats-cluster-values.yaml").read_text())
    cluster, nats = v["config"]["cluster"], v["config"]["nats"]
    assert cluster["enabled"] is True and cluster["replicas"] == 3
    # Routes and clients both on TLS from the hub's CA; clients mapped to users by cert.
    assert cluster["tls"]["enabled"] and cluster["tls"]["merge"]["verify"] is True
    assert nats["tls"]["enabled"] and nats["tls"]["merge"]["verify_and_map"] is True
    assert v["tlsCA"]["enabled"] and v["tlsCA"]["secretName"] == nats["tls"]["secretName"]
