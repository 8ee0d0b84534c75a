"""deploy/kubernetes/: every manifest valid against the Kubernetes API schemas (kubernetes-validate ships
them: no cluster, no network), the pieces agree with each other (selectors, port names, the ConfigMap),
the DaemonSet grants exactly what the daemon needs, its probes are open endpoints of the real app, and
the ConfigMap's declarative config is applied by a real daemon."""
from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from service.daemon import Daemon

from pynetmon.service.guards import BearerAuth
from pynetmon.service.routes import endpoints

KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise to work with
# CRDs are not in the Kubernetes schemas; these are checked below by what the operator reads from them.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def _documents() -> list[dict]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _one(kind: str) -> dict:
    found = [d for d in _documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(name: str = "pynetmon") -> dict:
    return next(c for c in _one("DaemonSet")["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_manifests_are_valid_kubernetes_objects():
    docs = _documents()
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "DaemonSet", "Service", "ServiceMonitor"}
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        # strict: an unknown or misspelt field is an error, not silently dropped by the API server
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_is_caught():
    broken = json.loads(json.dumps(_one("DaemonSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 9000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_daemonset_grants_only_what_the_daemon_needs():
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert not sc.get("privileged") and sc["capabilities"]["drop"] == ["ALL"]
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert sorted(_container()["securityContext"]["capabilities"]["add"]) == ["BPF", "NET_ADMIN", "PERFMON"]
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/sys/fs/bpf"]]["hostPath"]["path"] == "/sys/fs/bpf"
    # Everything the daemon writes is a volume (the root filesystem is read-only).
    env = {e["name"]: e.get("value") for e in _container()["env"]}
    args = _container()["args"]
    written = [env["PYNETMON_CACHE_DIR"], env["TMPDIR"], str(Path(args[args.index("--state-file") + 1]).parent)]
    capture_dir = Path(args[args.index("--capture-dir") + 1])  # inside the state volume: kept on the node
    assert str(capture_dir.parent) in written
    for path in written:
        assert path in mounts, f"{path} is written but not a volume"
    token = args[args.index("--token-file") + 1]
    assert str(Path(token).parent) in mounts


def test_probes_are_open_endpoints_of_the_daemon():
    container = _container()
    listen_port = int(container["args"][container["args"].index("--listen") + 1].rsplit(":", 1)[1])
    routes = {(e.method, e.path) for e in endpoints()}
    auth = BearerAuth(app=None, token="a-token")  # type: ignore[arg-type]  # only its policy is used
    for probe, path in (("livenessProbe", "/healthz"), ("startupProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, listen_port)
        assert ("GET", path) in routes
        assert not auth.needs_token("GET", path), f"{path} must answer kubelet's probe, which has no token"


def test_service_and_servicemonitor_select_the_daemon_pods():
    pod_labels = _one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    service, monitor = _one("Service"), _one("ServiceMonitor")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"
        assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node",
                "action": "replace"} in endpoint["relabelings"]
    for port in service_ports.values():
        assert port["targetPort"] in container_ports
    annotations = _one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) in container_ports.values()


def test_configmap_config_is_applied_by_a_real_daemon(hosts, tmp_path):
    """The ConfigMap's config.yaml, mounted where the DaemonSet's --config points, brings its monitors up
    on the interfaces its patterns match (eth0 of the test host; lo matches none), with the environment
    the DaemonSet gives (NODE_NAME)."""
    _, b = hosts
    configmap = _one("ConfigMap")
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in pod["volumes"]
    args = _container()["args"]
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["name"]: m for m in _container()["volumeMounts"]}
    assert config_path.parent == Path(mounts["config"]["mountPath"]) and "subPath" not in mounts["config"]
    assert config_path.name in configmap["data"]
    config = tmp_path / config_path.name
    config.write_text(configmap["data"][config_path.name])
    declared = yaml.safe_load(config.read_text())
    wanted = {}
    for name, entry in declared["monitors"].items():
        wanted[f"{name}.eth0" if entry.get("interfaces") else name] = entry["kind"]
    env = {e["name"]: "node-a" for e in _container()["env"] if "valueFrom" in e}
    d = Daemon("--netns", b.netns, "--config", str(config), "--state-file", str(tmp_path / "state.json"),
               log_path=tmp_path / "serve.log", env=env)
    try:
        running = {m["name"]: m["kind"] for m in d.client.get("/monitors").json()}
        assert running == wanted, d.log()
        for name in wanted:
            assert d.client.get(f"/monitors/{name}").status_code == 200, d.log()
        status = d.client.get("/config").json()
        assert status["last-reload"]["success"] is True, status
        assert d.client.get("/readyz").status_code == 200
    finally:
        assert d.stop() == 0, d.log()
