"""The deployment artefacts: Kubernetes manifests (deploy/kubernetes) and the Dockerfile.

The kustomizations are rendered with `kubectl kustomize` (skipped, with the reason, when
kubectl is not on PATH) and the rendered documents are checked three ways:

- against the gateway's own configuration in the rendered ConfigMap: probe paths and ports,
  the config mount, the worker pool's DNS name, the drain time;
- against the Kubernetes API schemas (kubernetes-validate, strict);
- by checkov (its own venv, `MCP_CHECKOV`, set by scripts/python-tests), together with the
  Dockerfile, allowing only the failed checks in CHECKOV_SKIPS, each explained in
  docs/deployment.md.

The gateway YAML each ConfigMap ships, and the image's default one, must pass
`mcp-proxy validate`. No cluster and no Docker daemon are needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conftest import REPO, bin_dir

K8S = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "example-overlay": K8S / "overlays" / "example",
}
DOCKERFILE = REPO / "Dockerfile"
DOCKER_CONFIG = REPO / "deploy" / "docker" / "gateway.yaml"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"  # its "### Secrets" section lists the Secrets

NAMESPACE = "mcp-gateway"
CONFIGMAP = "mcp-gateway-config"
CONFIG_KEY = "gateway.yaml"
GATEWAY_LABELS = {"app.kubernetes.io/name": "mcp-gateway", "app.kubernetes.io/component": "gateway"}
WORKER_LABELS = {"app.kubernetes.io/name": "mcp-tools", "app.kubernetes.io/component": "worker"}
# What the gateway does on SIGTERM after its requests are done: flush the log queue (≤ 10 s,
# docs/operations.md "Shutdown").
LOG_FLUSH_S = 10
# Oldest and newest Kubernetes the manifests must be valid for.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

# checkov checks allowed to fail, each explained in docs/deployment.md ("checkov"). A check in
# this list that no longer fails is reported too, so the list cannot go stale.
CHECKOV_SKIPS = {
    # Images are pinned by tag through kustomize `images:`; the digest is set at release time.
    "CKV_K8S_43",
    # The gateway reads its keys and PGPASSWORD from environment variables only.
    "CKV_K8S_35",
}

CHECKOV_TIMEOUT_S = 300


@dataclass
class Rendered:
    name: str
    path: Path
    docs: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def gateway_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.one("ConfigMap", CONFIGMAP)["data"][CONFIG_KEY])


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the kustomizations cannot be rendered (kubectl kustomize)")
    out_dir = tmp_path_factory.mktemp("k8s")
    renders = {}
    for name, path in KUSTOMIZATIONS.items():
        proc = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert docs, f"kubectl kustomize {path} rendered nothing"
        file = out_dir / f"{name}.yaml"
        file.write_text(proc.stdout)
        renders[name] = Rendered(name, file, docs)
    return renders


def each_render(renders: dict[str, Rendered]) -> list[Rendered]:
    return [renders[n] for n in KUSTOMIZATIONS]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def seconds(duration: str) -> float:
    """The gateway's duration syntax, as far as these files use it (`25s`, `2m`, `1h 30m`)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h|d)", duration)
    assert parts, f"unreadable duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']}: no single container {name}"
    return found[0]


def named_port(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    assert len(found) == 1, f"container {c['name']} has no port named {port}"
    return found[0]


# ----------------------------------------------------------------------------- what is there


def test_every_part_is_rendered_into_one_namespace(renders: dict[str, Rendered]) -> None:
    for r in each_render(renders):
        kinds = sorted(d["kind"] for d in r.docs)
        for kind, count in {
            "Namespace": 1,
            "ServiceAccount": 2,
            "ConfigMap": 1,
            "Service": 3,
            "Deployment": 2,
            "PodDisruptionBudget": 2,
            "HorizontalPodAutoscaler": 1,
            "NetworkPolicy": 3,
        }.items():
            assert kinds.count(kind) == count, f"{r.name}: {kinds.count(kind)} {kind}, want {count}"
        assert r.one("Namespace", NAMESPACE)
        for d in r.docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == NAMESPACE, f"{r.name}: {d['kind']}/{d['metadata']['name']}"
    # The base applies on a cluster without the Prometheus Operator's CRDs; the overlay opts in.
    assert not renders["base"].all("ServiceMonitor")
    assert len(renders["example-overlay"].all("ServiceMonitor")) == 1
    assert renders["example-overlay"].gateway_config() != renders["base"].gateway_config()


# ------------------------------------------------------------------ gateway wiring vs config


def test_gateway_probes_ports_and_mounts_match_its_configuration(renders: dict[str, Rendered]) -> None:
    for r in each_render(renders):
        cfg = r.gateway_config()
        listen, admin = port_of(cfg["listen"]), port_of(cfg["admin"])
        # Bound on every address, or neither the kubelet nor a Service could reach them.
        assert cfg["listen"].startswith("0.0.0.0:") and cfg["admin"].startswith("0.0.0.0:")
        dep = r.one("Deployment", "mcp-gateway")
        pod = dep["spec"]["template"]
        gw = container(dep, "gateway")
        assert named_port(gw, "mcp") == listen
        assert named_port(gw, "admin") == admin

        probes = {k: gw[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz"
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["startupProbe"]["path"] == "/healthz"
        for kind, probe in probes.items():
            assert named_port(gw, probe["port"]) == admin, f"{r.name}: {kind} not on the admin port"

        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert int(ann["prometheus.io/port"]) == admin and ann["prometheus.io/path"] == "/metrics"

        svc = r.one("Service", "mcp-gateway")
        assert [named_port(gw, p["targetPort"]) for p in svc["spec"]["ports"]] == [listen]
        admin_svc = r.one("Service", "mcp-gateway-admin")
        assert [named_port(gw, p["targetPort"]) for p in admin_svc["spec"]["ports"]] == [admin]
        for s in (svc, admin_svc):
            assert matches(s["spec"]["selector"], pod["metadata"]["labels"])

        # The configuration: a ConfigMap mounted as a directory (never subPath, which the
        # kubelet does not update), named by --config.
        args = gw["args"]
        config_path = Path(args[args.index("--config") + 1])
        assert config_path.name == CONFIG_KEY
        mounts = {m["name"]: m for m in gw["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        config_mounts = [
            m for m in gw["volumeMounts"] if volumes[m["name"]].get("configMap", {}).get("name") == CONFIGMAP
        ]
        assert len(config_mounts) == 1
        assert Path(config_mounts[0]["mountPath"]) == config_path.parent
        assert "subPath" not in config_mounts[0] and config_mounts[0].get("readOnly") is True

        # Writable places on a read-only root: the log spool and /tmp (upgrade socket).
        writable = [Path(m["mountPath"]) for m in mounts.values() if "emptyDir" in volumes[m["name"]]]
        spool = Path(cfg["logging"]["spool_dir"])
        assert any(spool.is_relative_to(w) for w in writable), f"{r.name}: spool {spool} not on a volume"
        assert Path("/tmp") in writable

        # Drain fits in the grace period: preStop pause + shutdown_grace + the final log flush.
        pre_stop = gw["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0].endswith("sleep")
        needed = int(pre_stop[1]) + seconds(cfg["shutdown_grace"]) + LOG_FLUSH_S
        assert pod["spec"]["terminationGracePeriodSeconds"] > needed


def test_worker_pool_follows_the_headless_service(renders: dict[str, Rendered]) -> None:
    for r in each_render(renders):
        cfg = r.gateway_config()
        routes = {rt["pool"] for rt in cfg["routes"]}
        svc = r.one("Service", "mcp-tools")
        assert svc["spec"]["clusterIP"] == "None", "the worker Service must be headless (one address per pod)"
        ns = svc["metadata"]["namespace"]
        [svc_port] = svc["spec"]["ports"]

        pool = cfg["pools"]["tools"]
        assert "tools" in routes
        assert pool["discover"]["dns"] == [{"name": f"mcp-tools.{ns}.svc.cluster.local", "port": svc_port["port"]}]

        dep = r.one("Deployment", "mcp-tools")
        worker = container(dep, "worker")
        assert matches(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
        assert named_port(worker, svc_port["targetPort"]) == svc_port["port"]
        args = worker["args"]
        assert args[0] == "tools" and args[args.index("--listen") + 1] == f"0.0.0.0:{svc_port['port']}"
        for kind in ("readinessProbe", "livenessProbe"):
            probe = worker[kind]["httpGet"]
            assert probe["path"] == pool["health"]["path"]
            assert named_port(worker, probe["port"]) == svc_port["port"]


# ------------------------------------------------------------------------ hardening, coverage


def test_pods_run_locked_down_with_resources_and_pinned_images(renders: dict[str, Rendered]) -> None:
    for r in each_render(renders):
        for dep in r.all("Deployment"):
            where = f"{r.name}: {dep['metadata']['name']}"
            spec = dep["spec"]["template"]["spec"]
            assert spec["automountServiceAccountToken"] is False, where
            sa = r.one("ServiceAccount", spec["serviceAccountName"])
            assert sa["automountServiceAccountToken"] is False, where
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, where
            assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert spec.get("hostNetwork", False) is False and spec.get("hostPID", False) is False, where
            assert spec["topologySpreadConstraints"] or spec["affinity"]["podAntiAffinity"], where
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc.get("privileged", False) is False, where
                assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][part]), f"{where}: {part}"
                image = c["image"]
                tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
                assert "@sha256:" in image or (tag and tag != "latest"), f"{where}: image {image} not pinned"
                assert c["livenessProbe"] and c["readinessProbe"], where


def test_every_deployment_is_budgeted_served_and_fenced(renders: dict[str, Rendered]) -> None:
    for r in each_render(renders):
        pdbs, services, policies = r.all("PodDisruptionBudget"), r.all("Service"), r.all("NetworkPolicy")
        for dep in r.all("Deployment"):
            name = dep["metadata"]["name"]
            labels = dep["spec"]["template"]["metadata"]["labels"]
            assert matches(dep["spec"]["selector"]["matchLabels"], labels)
            budgeted = any(matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs)
            assert budgeted, f"{r.name}: no PDB for {name}"
            assert any(matches(s["spec"]["selector"], labels) for s in services), f"{r.name}: no Service for {name}"
            assert any(
                p["spec"]["podSelector"] and matches(p["spec"]["podSelector"]["matchLabels"], labels) for p in policies
            ), f"{r.name}: no NetworkPolicy of its own for {name}"

        hpa = r.one("HorizontalPodAutoscaler", "mcp-gateway")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mcp-gateway"}
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert r.one("Deployment", "mcp-gateway")["spec"]["replicas"] == 3

        # Default deny: every pod, ingress, no rule.
        deny = r.one("NetworkPolicy", "default-deny-ingress")["spec"]
        assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")

        # Workers: only gateway pods, only on the worker port.
        worker_port = r.one("Service", "mcp-tools")["spec"]["ports"][0]["port"]
        worker_pols = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == WORKER_LABELS]
        assert len(worker_pols) == 1
        for rule in worker_pols[0]["spec"]["ingress"]:
            assert rule["from"] == [{"podSelector": {"matchLabels": GATEWAY_LABELS}}]
            assert rule["ports"] == [{"port": worker_port, "protocol": "TCP"}]

        # Gateway: the MCP port from anywhere, the admin port only from the monitoring namespace.
        cfg = r.gateway_config()
        gw_pols = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == GATEWAY_LABELS]
        assert len(gw_pols) == 1
        by_port = {rule["ports"][0]["port"]: rule for rule in gw_pols[0]["spec"]["ingress"]}
        assert set(by_port) == {port_of(cfg["listen"]), port_of(cfg["admin"])}
        assert "from" not in by_port[port_of(cfg["listen"])]
        [source] = by_port[port_of(cfg["admin"])]["from"]
        assert list(source) == ["namespaceSelector"] and source["namespaceSelector"]["matchLabels"]


def test_secret_references_exist_or_are_documented(renders: dict[str, Rendered]) -> None:
    doc = DEPLOYMENT_DOC.read_text()
    section = doc[doc.index("\n### Secrets\n") + 1 :]
    section = section[: section.index("\n#", 1)]
    seen = 0
    for r in each_render(renders):
        secrets = {s["metadata"]["name"]: s for s in r.all("Secret")}
        for dep in r.all("Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        continue
                    seen += 1
                    name, key = ref["name"], ref["key"]
                    if name in secrets:
                        assert key in secrets[name].get("data", {}) | secrets[name].get("stringData", {})
                        continue
                    for word in (name, key, env["name"]):
                        assert f"`{word}`" in section, f"docs/deployment.md 'Secrets' does not name `{word}`"
            for vol in dep["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in vol:
                    name = vol["secret"]["secretName"]
                    assert name in secrets or f"`{name}`" in section, f"secret volume {name} undocumented"
    assert seen >= 4, "the gateway's keys and database password should come from Secrets"


def test_service_monitor_scrapes_the_admin_service(renders: dict[str, Rendered]) -> None:
    r = renders["example-overlay"]
    [sm] = r.all("ServiceMonitor")
    svc = r.one("Service", "mcp-gateway-admin")
    assert matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert not matches(sm["spec"]["selector"]["matchLabels"], r.one("Service", "mcp-gateway")["metadata"]["labels"])
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]} and endpoint["path"] == "/metrics"


# -------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(renders: dict[str, Rendered], version: str) -> None:
    checked = 0
    for r in each_render(renders):
        for d in r.docs:
            what = f"{r.name}: {d['kind']}/{d['metadata']['name']} on Kubernetes {version}"
            try:
                kubernetes_validate.validate(d, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                # Only the Prometheus Operator's CRD has no schema here (checked above by hand).
                assert d["kind"] == "ServiceMonitor", f"{what}: no schema"
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{what}: {e.message} at {list(e.path)}")
    assert checked >= 2 * 15


# -------------------------------------------------------------------------------- checkov


@pytest.fixture(scope="module")
def checkov_report(renders: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    checkov = os.environ.get("MCP_CHECKOV") or shutil.which("checkov")
    if not checkov:
        pytest.skip("checkov not found: scripts/python-tests installs it into its own venv and sets MCP_CHECKOV")
    files = [r.path for r in each_render(renders)] + [DOCKERFILE]
    args = [checkov, "--quiet", "--compact", "--output", "json", "--framework", "kubernetes", "dockerfile"]
    for f in files:
        args += ["--file", str(f)]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false", LOG_LEVEL="WARNING")
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path_factory.mktemp("checkov"),
    )
    # Exit 1 means "some check failed", which the tests below judge against the skip-list.
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def failed_and_passed(report: list[dict[str, Any]], check_type: str) -> tuple[list[dict[str, Any]], int]:
    [r] = [r for r in report if r["check_type"] == check_type]
    return r["results"]["failed_checks"], r["summary"]["passed"]


@pytest.mark.parametrize("check_type", ["kubernetes", "dockerfile"])
def test_checkov_finds_nothing_beyond_the_documented_skips(
    checkov_report: list[dict[str, Any]], check_type: str
) -> None:
    failed, passed = failed_and_passed(checkov_report, check_type)
    assert passed >= (100 if check_type == "kubernetes" else 5), f"checkov ran few {check_type} checks: {passed}"
    unexpected = sorted(
        {f"{f['check_id']} {f['check_name']} ({f['resource']})" for f in failed if f["check_id"] not in CHECKOV_SKIPS}
    )
    assert not unexpected, "checkov failed checks:\n" + "\n".join(unexpected)


def test_checkov_skips_are_needed_and_documented(checkov_report: list[dict[str, Any]]) -> None:
    failed_ids = {f["check_id"] for r in checkov_report for f in r["results"]["failed_checks"]}
    assert CHECKOV_SKIPS <= failed_ids, f"skips that no longer fail: {sorted(CHECKOV_SKIPS - failed_ids)}"
    doc = DEPLOYMENT_DOC.read_text()
    for check in CHECKOV_SKIPS:
        assert f"`{check}`" in doc, f"{check} is skipped but not explained in docs/deployment.md"


# ----------------------------------------------------------------------- the Dockerfile


def test_dockerfile_builds_both_binaries_and_runs_them_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    assert stages[0] == ("rust:${RUST_VERSION}-${DEBIAN_RELEASE}", "builder")
    assert stages[-1][0] == "debian:${DEBIAN_RELEASE}-slim"
    assert re.search(r"^ARG DEBIAN_RELEASE=bookworm$", text, re.MULTILINE)
    runtime = text[text.rindex("\nFROM ") :]
    builder = text[: text.rindex("\nFROM ")]
    assert "cmake" in builder and builder.count("cargo build --release --locked -p mcp-proxy -p mcp-workers") == 2
    assert "ca-certificates" in runtime
    [user] = re.findall(r"^USER\s+(\S+)$", runtime, re.MULTILINE)
    uid = int(user.split(":")[0])
    assert uid >= 10000, "numeric, non-root UID"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/mcp-proxy"\]$', runtime, re.MULTILINE)
    assert "/out/mcp-proxy /out/mcp-worker /usr/local/bin/" in runtime

    cfg = yaml.safe_load(DOCKER_CONFIG.read_text())
    [exposed] = re.findall(r"^EXPOSE\s+(.+)$", runtime, re.MULTILINE)
    assert {int(p) for p in exposed.split()} == {port_of(cfg["listen"]), port_of(cfg["admin"])}
    assert f"/dev/tcp/127.0.0.1/{port_of(cfg['admin'])}" in runtime and "/healthz" in runtime
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored


# ----------------------------------------------------------------- the shipped configurations


def validate(proxy: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(proxy), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_shipped_gateway_configurations_pass_validate(renders: dict[str, Rendered], tmp_path: Path) -> None:
    proxy = bin_dir() / "mcp-proxy"
    if not os.access(proxy, os.X_OK):
        pytest.fail(f"missing {proxy}: run cargo build --workspace first (or set MCP_BIN_DIR)", pytrace=False)

    proc = validate(proxy, DOCKER_CONFIG)
    assert proc.returncode == 0, f"{DOCKER_CONFIG}:\n{proc.stdout}{proc.stderr}"

    for r in each_render(renders):
        text = r.one("ConfigMap", CONFIGMAP)["data"][CONFIG_KEY]
        config = tmp_path / f"{r.name}.yaml"
        config.write_text(text)
        proc = validate(proxy, config)
        assert proc.returncode == 0, f"{r.name}: the ConfigMap's gateway.yaml is refused:\n{proc.stdout}{proc.stderr}"
