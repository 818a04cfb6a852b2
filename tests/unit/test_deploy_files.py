"""deploy/: every file parses, the compose file and the Kubernetes manifests name only what
exists (our image and CLI subcommands, official images, files in the repository), and every
metric in the alert rules and the dashboard is one the workers, dramatiq or RabbitMQ export."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from schema.settings import Settings
from tests.support.deploy_files import (
    DASHBOARD,
    DEPLOY,
    ROOT,
    RULES,
    dramatiq_sample_names,
    our_sample_names,
    promql_metric_names,
    used_metric_names,
    yaml_documents,
)
from workers.cli import _parser
from workers.runtime import metrics

COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"

OUR_IMAGE = "browser-sessions"
OFFICIAL_IMAGES = {"rabbitmq", "postgres", "prom/prometheus", "grafana/grafana"}
WORKER_QUEUES = ("browse", "capture", "expiry")

#: RabbitMQ's own exporter (rabbitmq_prometheus, /metrics/per-object) series we use.
RABBITMQ_METRICS = {
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
}
PROMETHEUS_METRICS = {"up"}


# -- every file parses ------------------------------------------------------------------


def _deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes)


@pytest.mark.parametrize("path", _deploy_files(".yaml", ".yml"), ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    assert yaml_documents(path), f"{path} is empty"


@pytest.mark.parametrize("path", _deploy_files(".json"), ids=lambda p: p.name)
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


def test_there_is_something_to_check() -> None:
    assert len(_deploy_files(".yaml", ".yml")) >= 10
    assert DASHBOARD.exists() and RULES.exists() and COMPOSE.exists()


# -- metrics named in rules and dashboard exist -----------------------------------------


def test_the_metric_name_parser() -> None:
    expr = (
        'sum by (le) (rate(browser_sessions_result_delivery_seconds_bucket{le!="x"}[5m]))'
        ' / on (instance) group_left (component) up{job="a"} and vector(0)'
        " > 3 * (sum(rate(dramatiq_messages_total[1d] offset 30m)) or vector(0))"
    )
    assert promql_metric_names(expr) == {
        "browser_sessions_result_delivery_seconds_bucket",
        "up",
        "dramatiq_messages_total",
    }


def test_every_metric_in_rules_and_dashboard_is_exported() -> None:
    known = our_sample_names() | dramatiq_sample_names() | RABBITMQ_METRICS | PROMETHEUS_METRICS
    used = used_metric_names()
    assert used - known == set()
    # The dashboard covers every metric of ours (the _created series aside).
    ours = {n for n in our_sample_names() if not n.endswith("_created")}
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    uncovered = {n for n in ours if re.sub(r"_(bucket|sum|count)$", "", n) not in families}
    assert uncovered == set()


def test_our_metric_names_follow_conventions() -> None:
    for family in metrics.REGISTRY.collect():
        assert family.name.startswith("browser_sessions_")
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= {
                "actor",
                "outcome",
                "error_code",
                "result",
                "state",
                "le",
                "verdict",
                "status",
            }


# -- alert rules ------------------------------------------------------------------------


def _alerts() -> list[dict[str, Any]]:
    (doc,) = yaml_documents(RULES)
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_alerts_required_by_the_runbook_exist() -> None:
    names = {a["alert"] for a in _alerts()}
    assert {
        "BrowserSessionsQueueBacklog",
        "BrowserSessionsBrowseErrorRate",
        "BrowserSessionsAuthExpiredSpike",
        "BrowserSessionsDecryptFailed",
        "BrowserSessionsAuditWriteFailed",
        "BrowserSessionsBrowserCrashLoop",
        "BrowserSessionsCaptureTimeouts",
        "BrowserSessionsWorkerDown",
    } <= names


def test_every_alert_has_a_summary_severity_and_a_runbook_section() -> None:
    readme = (ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else ""
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in readme.splitlines()
        if re.match(r"#{1,6} ", line)
    }
    for alert in _alerts():
        annotations = alert["annotations"]
        assert annotations.get("summary"), alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning")
        url = annotations["runbook_url"]
        assert url == f"README.md#{alert['alert'].lower()}"
        assert url.split("#", 1)[1] in anchors, f"README.md has no section {alert['alert']}"


# -- compose ----------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    (doc,) = yaml_documents(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _image_repo(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def _parse_cli(args: list[str]) -> Any:
    try:
        return _parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"not a browser-sessions command: {shlex.join(args)}")


def test_compose_names_only_images_that_exist() -> None:
    for name, service in _compose()["services"].items():
        repo = _image_repo(service["image"])
        if repo == OUR_IMAGE:
            build = service["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).is_file(), name
        else:
            assert repo in OFFICIAL_IMAGES, f"{name}: unknown image {service['image']}"
            assert ":" in service["image"], f"{name}: pin a tag"


def test_compose_runs_only_commands_that_exist() -> None:
    services = _compose()["services"]
    queues_run = set()
    for name, service in services.items():
        if _image_repo(service["image"]) != OUR_IMAGE:
            continue
        args = _parse_cli(service["command"])
        assert args.command in ("migrate", "worker"), name
        if args.command == "worker":
            queues_run.update(args.queues)
            assert len(args.queues) == 1, f"{name}: one queue kind per service"
    assert queues_run == set(WORKER_QUEUES)
    migrate = [n for n, s in services.items() if s.get("command", [None])[0] == "migrate"]
    assert migrate, "a migrate one-shot"
    for name, service in services.items():
        if service.get("command", [None])[0] == "worker":
            condition = service["depends_on"][migrate[0]]["condition"]
            assert condition == "service_completed_successfully", name


def test_compose_mounts_only_files_that_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"


def test_compose_connects_each_service_with_its_own_database_role() -> None:
    from urllib.parse import urlsplit

    expected = {"migrate": "postgres", "worker": "browser_sessions_worker"}
    expected["api"] = "browser_sessions_orchestrator"
    roles = {}
    for name, service in _compose()["services"].items():
        if _image_repo(service["image"]) != OUR_IMAGE:
            continue
        url = service["environment"]["BROWSER_SESSIONS_DATABASE_URL"]
        roles[name] = urlsplit(url.replace("${", "").replace("}", "")).username
        assert roles[name] == expected[service["command"][0]], name
    assert list(roles.values()).count("postgres") == 1  # the schema owner: migrate only
    postgres = _compose()["services"]["postgres"]
    assert any("docker-entrypoint-initdb.d" in v for v in postgres["volumes"])


def test_compose_capture_grace_and_liveview() -> None:
    services = _compose()["services"]
    capture = services["worker-capture"]
    grace = capture["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) * 60 > Settings().capture_timeout.total_seconds()
    liveview = str(Settings().liveview_port)
    assert any(p.endswith(f":{liveview}") for p in capture["ports"])
    assert capture["environment"]["BROWSER_SESSIONS_LIVEVIEW_HOST"] == "0.0.0.0"


def test_prometheus_scrapes_the_compose_services() -> None:
    (config,) = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    services = set(_compose()["services"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    workers = jobs["browser-sessions-workers"]
    (sd,) = workers["dns_sd_configs"]
    assert set(sd["names"]) == {f"worker-{q}" for q in WORKER_QUEUES} <= services
    assert sd["port"] == Settings().metrics_port
    (target,) = jobs["rabbitmq"]["static_configs"][0]["targets"]
    assert target.split(":")[0] in services
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and line[0].isupper()]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = [json.loads(arg) for op, arg in instructions if op == "ENTRYPOINT"]
    assert entrypoint[-1] == "browser-sessions"
    assert "BROWSER_SESSIONS_CHROMIUM_PATH=/usr/bin/chromium" in text
    assert re.search(r"\bchromium\b", text) and "fonts-" in text
    for op, arg in instructions:
        if op == "COPY":
            *sources, _dest = arg.split()
            for source in sources:
                path = ROOT / source
                # README.md is written with the docs; everything else must be here now.
                assert path.exists() or source == "README.md", source


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``rel`` (a path, or one of its parent folders)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_the_image_is_built_from_the_runtime_only() -> None:
    """The build context (deploy/Dockerfile.dockerignore, read by BuildKit for
    deploy/Dockerfile) holds the runtime packages and leaves out dev tooling and tests."""
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    files = [
        p.relative_to(ROOT).as_posix()
        for package in ("schema", "producers", "workers")
        for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    shipped = {f for f in files if not _ignored(f, patterns)}
    assert not {f for f in shipped if f.startswith("workers/dev/")}
    assert _ignored("tests/unit/test_layout.py", patterns)
    runtime = {f for f in files if not f.startswith("workers/dev/") and not f.endswith(".pyc")}
    assert runtime <= shipped, sorted(runtime - shipped)
    assert {"workers/browser/static/liveview.html", "schema/migrations/0001_core.sql"} <= shipped


# -- Kubernetes -------------------------------------------------------------------------


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml_documents(path)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _k8s_objects() if o["kind"] == kind}


def test_kustomization_lists_files_that_exist() -> None:
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def _worker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_one_deployment_per_queue_with_probes_on_the_health_port() -> None:
    deployments = _by_kind("Deployment")
    defaults = Settings()
    for queue in WORKER_QUEUES:
        deployment = deployments[f"worker-{queue}"]
        container = _worker_container(deployment)
        args = _parse_cli(container["args"])
        assert (args.command, args.queues) == ("worker", [queue])
        assert _image_repo(container["image"]) == OUR_IMAGE
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["health"] == defaults.health_port
        assert ports["metrics"] == defaults.metrics_port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        requests = container["resources"]["requests"]
        assert requests["memory"] and requests["cpu"]
        assert container["resources"]["limits"]["memory"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(defaults.metrics_port)


def test_capture_grace_period_outlasts_the_capture_timeout() -> None:
    spec = _by_kind("Deployment")["worker-capture"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > Settings().capture_timeout.total_seconds()


def test_keys_come_from_a_secret_read_only() -> None:
    defaults = Settings.from_env({"BROWSER_SESSIONS_KEY_DIR": "/var/lib/browser-sessions/keys"})
    for queue in WORKER_QUEUES:
        spec = _by_kind("Deployment")[f"worker-{queue}"]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret = volumes["keys-secret"]["secret"]
        assert secret["secretName"] == "browser-sessions-keys"
        assert secret["defaultMode"] in (0o400, 0o600)
        (init,) = spec["initContainers"]
        assert {"name": "keys-secret", "mountPath": "/secret", "readOnly": True} in init[
            "volumeMounts"
        ]
        mounts = {
            m["name"]: m
            for m in _worker_container({"spec": {"template": {"spec": spec}}})["volumeMounts"]
        }
        assert mounts["keys"]["readOnly"] is True
        assert defaults.key_dir.parent == Path(mounts["keys"]["mountPath"])
        assert spec["securityContext"]["runAsNonRoot"] is True
    config = _by_kind("ConfigMap")["browser-sessions-config"]["data"]
    assert config["BROWSER_SESSIONS_KEY_DIR"] == str(defaults.key_dir)


def test_keda_scales_browse_and_capture_on_their_queues() -> None:
    deployments = _by_kind("Deployment")
    scaled = _by_kind("ScaledObject")
    auth = _by_kind("TriggerAuthentication")
    for queue in ("browse", "capture"):
        obj = scaled[f"worker-{queue}"]["spec"]
        assert obj["scaleTargetRef"]["name"] in deployments
        (trigger,) = obj["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == Settings().queue(queue)
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in auth
        assert obj["minReplicaCount"] >= 1


def test_the_liveview_service_selects_capture_pods() -> None:
    service = _by_kind("Service")["worker-capture-liveview"]["spec"]
    pods = _by_kind("Deployment")["worker-capture"]["spec"]["template"]
    assert service["selector"].items() <= pods["metadata"]["labels"].items()
    (port,) = service["ports"]
    container_ports = {
        p["name"]: p["containerPort"]
        for p in _worker_container({"spec": {"template": pods}})["ports"]
    }
    assert container_ports[port["targetPort"]] == Settings().liveview_port


def _container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _secret_names(pod_spec: dict[str, Any]) -> set[str]:
    """Every Secret a pod's containers read (envFrom, env valueFrom, volumes)."""
    names = {v["secret"]["secretName"] for v in pod_spec.get("volumes", []) if "secret" in v}
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
        for value in _container_env(container).values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                names.add(value["secretKeyRef"]["name"])
    return names


def test_the_schema_owner_url_reaches_only_the_migrate_job() -> None:
    secrets = _by_kind("Secret")
    holding = {n for n, s in secrets.items() if "MIGRATE_DATABASE_URL" in s.get("stringData", {})}
    assert holding == {"browser-sessions-migrate"}
    job = _by_kind("Job")["browser-sessions-migrate"]["spec"]["template"]["spec"]
    assert _secret_names(job) == {"browser-sessions-migrate"}
    for queue in WORKER_QUEUES:
        spec = _by_kind("Deployment")[f"worker-{queue}"]["spec"]["template"]["spec"]
        assert "browser-sessions-migrate" not in _secret_names(spec), queue
        assert "MIGRATE_DATABASE_URL" not in json.dumps(spec), queue


def test_browsing_pods_keep_chromium_sandboxed() -> None:
    profile = json.loads((DEPLOY / "seccomp" / "chromium.json").read_text())
    denied = {n for rule in profile["syscalls"] for n in rule["names"]}
    assert not denied & {"clone", "clone3", "unshare", "chroot"}  # the sandbox's own calls
    assert {"mount", "ptrace", "bpf", "kexec_load", "init_module"} <= denied
    for queue in ("browse", "capture"):
        container = _worker_container(_by_kind("Deployment")[f"worker-{queue}"])
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        seccomp = context["seccompProfile"]
        assert seccomp == {
            "type": "Localhost",
            "localhostProfile": "profiles/browser-sessions-chromium.json",
        }
    compose = _compose()["services"]
    for service in ("worker-browse", "worker-capture"):
        (option,) = compose[service]["security_opt"]
        assert (COMPOSE.parent / option.removeprefix("seccomp=")).resolve() == (
            DEPLOY / "seccomp" / "chromium.json"
        )
    sources = [*DEPLOY.rglob("*"), *(ROOT / "workers").rglob("*.py")]
    for path in sources:
        if path.is_file():
            assert "--no-sandbox" not in path.read_text(errors="replace"), path


def _policies_for(component: str, kind: str) -> list[dict[str, Any]]:
    found = []
    for policy in _by_kind("NetworkPolicy").values():
        spec = policy["spec"]
        (expression,) = spec["podSelector"]["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        if component in expression["values"] and kind in spec["policyTypes"]:
            found.append(spec)
    return found


def test_network_policies_limit_worker_egress() -> None:
    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"]
    for component in WORKER_QUEUES:
        rules = [rule for spec in _policies_for(component, "Egress") for rule in spec["egress"]]
        assert rules, component
        public = [
            peer["ipBlock"]
            for rule in rules
            for peer in rule["to"]
            if peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0")
        ]
        if component == "expiry":
            assert not public  # it never browses
            continue
        v4 = [block for block in public if block["cidr"] == "0.0.0.0/0"]
        assert v4 and all(set(private) <= set(block["except"]) for block in v4)
        assert all("fc00::/7" in b["except"] for b in public if b["cidr"] == "::/0")
        for rule in rules:
            if any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule["to"]):
                assert {p["port"] for p in rule["ports"]} == {80, 443}


def test_the_live_view_is_served_over_tls() -> None:
    ingress = _by_kind("Ingress")["worker-capture-liveview"]["spec"]
    (tls,) = ingress["tls"]
    (rule,) = ingress["rules"]
    assert rule["host"] in tls["hosts"] and tls["secretName"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] in _by_kind("Service")
    container = _worker_container(_by_kind("Deployment")["worker-capture"])
    env = _container_env(container)
    # The public URL names the pod; any capture pod forwards to the one named (its peers).
    assert env["BROWSER_SESSIONS_LIVEVIEW_PUBLIC_URL"] == f"https://{rule['host']}/p/$(POD_IP)"
    assert path["path"] == "/p/"
    assert env["BROWSER_SESSIONS_LIVEVIEW_PEERS"] == "worker-capture-liveview"
    assert "worker-capture-liveview" in _by_kind("Service")
    assert env["BROWSER_SESSIONS_FRAME_ANCESTORS"].startswith("https://")
