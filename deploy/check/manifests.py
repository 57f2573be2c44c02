"""Consistency checks of the delivery files that no schema can make.

Run by scripts/check-deploy (inside its virtualenv, which has PyYAML and
promql-parser):

    python3 deploy/check/manifests.py ROOT RENDERED_DIR

RENDERED_DIR holds `pre.yaml` and `prod.yaml`, the output of
`kustomize build` of both overlays. Prints one line per finding and exits 1
when there is any:

- every variable a service requires (read from its code: `required("X")`
  in services/<name>/src, KAFKA_BROKERS where it reads KafkaSettings,
  AUTH_JWKS_URL where it reads IdentitySettings or requires it) is set for
  it in docker-compose.yml and in both overlays; each listens on every
  interface (<SERVICE>_HOST=0.0.0.0) there; auth has AUTH_ADMIN_PASSWORD
  and AUTH_KEY_ENCRYPTION_KEY unless TRAMITA_ENV=development; the gateway's upstreams are not loopback;
- every ConfigMap a Deployment reads exists; no Secret is committed;
- every service container has probes, requests and limits and the
  restricted security context; prod runs each as a Rollout with a
  disruption budget and an autoscaler of at least two replicas;
- every topic the code names has a KafkaTopic, and every KafkaTopic is a
  topic the code names (or its dead-letter topic);
- every PromQL expression (alerting rules, canary analysis, dashboard)
  parses;
- the versions that must agree do: the Rust toolchain (rust-toolchain.toml,
  Dockerfile, .gitlab-ci.yml) and Kafka (scripts/infra, docker-compose.yml,
  k8s).
"""

import json
import pathlib
import re
import sys

import promql_parser
import yaml

SERVICES = ["gateway", "auth", "files", "index", "docs", "bpm"]
findings = []


def finding(where, text):
    findings.append(f"{where}: {text}")


def code_of(root, service):
    """The service's non-test source, each file cut at its test module."""
    text = []
    for path in sorted((root / "services" / service / "src").rglob("*.rs")):
        source = path.read_text(encoding="utf-8")
        text.append(source.split("#[cfg(test)]")[0])
    return "\n".join(text)


def required_variables(root):
    """Per service, the variables it refuses to start without."""
    wanted = {}
    for service in SERVICES:
        code = code_of(root, service)
        names = set(re.findall(r'\brequired\("([A-Z][A-Z0-9_]*)"\)', code))
        if "KafkaSettings::from_env" in code:
            names.add("KAFKA_BROKERS")
        if "IdentitySettings::from_env" in code:
            names.add("AUTH_JWKS_URL")
        names.add(f"{service.upper()}_HOST")
        wanted[service] = names
    return wanted


def check_environment(where, service, env, wanted):
    """`env`: the variables set for the service (value None: from a Secret)."""
    for name in sorted(wanted[service]):
        if name not in env or env[name] == "":
            finding(where, f"{service} requires {name}, which is not set")
    host = env.get(f"{service.upper()}_HOST")
    if host is not None and host != "0.0.0.0":
        finding(where, f"{service} listens on {host}: other containers cannot reach it (want 0.0.0.0)")
    if service == "auth" and env.get("TRAMITA_ENV") != "development":
        if "AUTH_ADMIN_PASSWORD" not in env:
            finding(where, "auth requires AUTH_ADMIN_PASSWORD unless TRAMITA_ENV=development")
        if "AUTH_KEY_ENCRYPTION_KEY" not in env:
            finding(where, "auth requires AUTH_KEY_ENCRYPTION_KEY unless TRAMITA_ENV=development")
        if env.get("AUTH_DEMO_USERS") == "true":
            finding(where, "auth refuses AUTH_DEMO_USERS=true outside development")
    if service == "gateway":
        upstreams = env.get("GATEWAY_UPSTREAMS") or ""
        for upstream in SERVICES[1:]:
            if f"{upstream}=" not in upstreams:
                finding(where, f"GATEWAY_UPSTREAMS does not name {upstream}")
        if "127.0.0.1" in upstreams or "localhost" in upstreams:
            finding(where, "GATEWAY_UPSTREAMS points at loopback")
        if env.get("GATEWAY_INTERNAL_HOST") in (None, "127.0.0.1"):
            finding(where, "GATEWAY_INTERNAL_HOST is loopback: Prometheus cannot scrape the gateway")


def check_compose(root, wanted):
    compose = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose.get("services", {})
    published = [name for name, spec in services.items() if spec.get("ports") and not spec.get("profiles")]
    if published != ["gateway"]:
        finding("docker-compose.yml", f"only the gateway may publish a port; these do: {published}")
    for service in SERVICES:
        spec = services.get(service)
        if spec is None:
            finding("docker-compose.yml", f"no service {service}")
            continue
        env = {k: (None if v is None else str(v)) for k, v in (spec.get("environment") or {}).items()}
        check_environment("docker-compose.yml", service, env, wanted)
        if "healthcheck" not in spec:
            finding("docker-compose.yml", f"{service} has no health check")
        for dependency, condition in (spec.get("depends_on") or {}).items():
            if condition.get("condition") != "service_healthy":
                finding("docker-compose.yml", f"{service} starts before {dependency} is healthy")
        target = (spec.get("build") or {}).get("target")
        want = "gateway" if service == "gateway" else "service"
        if target != want:
            finding("docker-compose.yml", f"{service} builds target {target}, not {want}")


def container_env(container, configmaps, where):
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            data = configmaps.get(ref["name"])
            if data is None:
                finding(where, f"ConfigMap {ref['name']} is read but not defined")
                continue
            env.update({k: str(v) for k, v in data.items()})
        if source.get("secretRef"):
            finding(where, "envFrom secretRef hides which variables it sets; use secretKeyRef")
    for item in container.get("env", []):
        env[item["name"]] = item.get("value") if "value" in item else None
    return env


def check_container(where, container):
    for probe in ("livenessProbe", "readinessProbe"):
        if probe not in container:
            finding(where, f"no {probe}")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                finding(where, f"no {kind}.{resource}")
    security = container.get("securityContext", {})
    expected = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    for key, value in expected.items():
        if security.get(key) is not value:
            finding(where, f"securityContext.{key} must be {value}")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        finding(where, "securityContext.capabilities.drop must be [ALL]")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        finding(where, "securityContext.seccompProfile must be RuntimeDefault")


def check_overlay(name, documents, wanted):
    where = f"k8s/overlays/{name}"
    by_kind = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    if by_kind.get("Secret"):
        finding(where, f"Secrets must not be committed: {sorted(by_kind['Secret'])}")
    configmaps = {n: d.get("data", {}) for n, d in by_kind.get("ConfigMap", {}).items()}
    for service in SERVICES:
        deployment = by_kind.get("Deployment", {}).get(service)
        if deployment is None:
            finding(where, f"no Deployment {service}")
            continue
        pod = deployment["spec"]["template"]["spec"]
        if pod.get("terminationGracePeriodSeconds", 30) < 35:
            finding(where, f"{service}: terminationGracePeriodSeconds below the 30 s the service takes to drain")
        container = next(c for c in pod["containers"] if c["name"] == service)
        check_container(f"{where} {service}", container)
        env = container_env(container, configmaps, f"{where} {service}")
        check_environment(where, service, env, wanted)
        if name == "prod":
            rollout = by_kind.get("Rollout", {}).get(service)
            if rollout is None or rollout["spec"].get("workloadRef", {}).get("name") != service:
                finding(where, f"{service} is not run by a Rollout")
            elif deployment["spec"].get("replicas") != 0:
                finding(where, f"Deployment {service} must keep 0 replicas: its Rollout runs the pods")
            hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(service)
            if hpa is None or hpa["spec"].get("minReplicas", 1) < 2:
                finding(where, f"{service} needs an autoscaler with at least 2 replicas")
            elif hpa["spec"]["scaleTargetRef"].get("kind") != "Rollout":
                finding(where, f"the autoscaler of {service} must scale its Rollout")
            if service not in by_kind.get("PodDisruptionBudget", {}):
                finding(where, f"{service} has no PodDisruptionBudget")
            if service not in by_kind.get("NetworkPolicy", {}):
                finding(where, f"{service} has no NetworkPolicy")
    if name == "prod" and "default-deny" not in by_kind.get("NetworkPolicy", {}):
        finding(where, "no default-deny NetworkPolicy")
    return by_kind


def topics_of_code(root):
    names = set()
    for path in list((root / "services").rglob("*.rs")) + list((root / "libs").rglob("*.rs")):
        if "/tests/" in str(path):
            continue
        code = path.read_text(encoding="utf-8").split("#[cfg(test)]")[0]
        names.update(re.findall(r'"([a-z]+\.(?:events|commands|saga-replies))"', code))
    return names


def check_topics(root, by_kind):
    code = topics_of_code(root)
    declared = {d["spec"].get("topicName", n) for n, d in by_kind.get("KafkaTopic", {}).items()}
    for topic in sorted(code - declared):
        finding("k8s/base/servers/topics.yaml", f"no KafkaTopic for {topic}")
    for topic in sorted(declared):
        base = topic[: -len(".dlq")] if topic.endswith(".dlq") else topic
        if base not in code:
            finding("k8s/base/servers/topics.yaml", f"KafkaTopic {topic} is not a topic the code uses")


def parse_promql(where, expr):
    expr = expr.replace("$__rate_interval", "5m")
    expr = re.sub(r"\{\{\s*args\.([a-z-]+)\s*\}\}", lambda m: "0.05" if m.group(1).startswith("max") else "x", expr)
    try:
        promql_parser.parse(expr)
    except Exception as error:  # the parser raises plain exceptions
        finding(where, f"PromQL does not parse ({error}): {expr.strip()[:120]}")


def check_promql(root, by_kind):
    for name, rule in by_kind.get("PrometheusRule", {}).items():
        for group in rule["spec"]["groups"]:
            for item in group["rules"]:
                parse_promql(f"PrometheusRule {name} {item.get('alert') or item.get('record')}", item["expr"])
    for name, template in by_kind.get("AnalysisTemplate", {}).items():
        for metric in template["spec"]["metrics"]:
            query = metric["provider"].get("prometheus", {}).get("query")
            if query:
                parse_promql(f"AnalysisTemplate {name}", query)
    for path in (root / "deploy" / "compose" / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                parse_promql(f"{path.relative_to(root)} {panel['title']}", target["expr"])


def check_versions(root, by_kind):
    toolchain = re.search(r'channel\s*=\s*"([^"]+)"', (root / "rust-toolchain.toml").read_text()).group(1)
    dockerfile = (root / "Dockerfile").read_text()
    match = re.search(r"^ARG RUST_VERSION=(\S+)", dockerfile, re.M)
    if not match or match.group(1) != toolchain:
        finding("Dockerfile", f"ARG RUST_VERSION must be {toolchain} (rust-toolchain.toml)")
    gitlab = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
    image = gitlab.get("default", {}).get("image", "")
    if not image.startswith(f"rust:{toolchain}"):
        finding(".gitlab-ci.yml", f"default image {image} is not rust:{toolchain}")
    kafka = re.search(r"^KAFKA_VERSION=(\S+)", (root / "scripts" / "infra").read_text(), re.M).group(1)
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    if compose["services"]["kafka"]["image"] != f"apache/kafka:{kafka}":
        finding("docker-compose.yml", f"Kafka must be apache/kafka:{kafka} (scripts/infra)")
    for name, doc in by_kind.get("Kafka", {}).items():
        if str(doc["spec"]["kafka"].get("version")) != kafka:
            finding("k8s", f"Kafka {name} must run version {kafka} (scripts/infra)")


def main():
    root = pathlib.Path(sys.argv[1])
    rendered = pathlib.Path(sys.argv[2])
    wanted = required_variables(root)
    check_compose(root, wanted)
    prod = None
    for overlay in ("pre", "prod"):
        documents = [d for d in yaml.safe_load_all((rendered / f"{overlay}.yaml").read_text()) if d]
        by_kind = check_overlay(overlay, documents, wanted)
        check_topics(root, by_kind)
        if overlay == "prod":
            prod = by_kind
    check_promql(root, prod)
    check_versions(root, prod)
    for line in findings:
        print(line)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
