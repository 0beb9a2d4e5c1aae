"""The container image and the Helm values, checked statically (no Docker daemon, no helm, no chart download where
the tests run): deploy/k8s/values.yaml against the vendored schema of Dagster's chart (deploy/k8s/schema/), every
image tag unique, and the Dockerfile's stages, user, command and port against the values and the code location.

Each check is a function returning the problems it finds; the tests run it on the real files (no problems) and on
broken copies (the problem is found), so a check that stopped biting would fail here too."""

import copy
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
INSTANCE = ROOT / "deploy" / "k8s" / "dagster.yaml"
SCHEMA = ROOT / "deploy" / "k8s" / "schema" / "dagster-values.schema.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
CODE_LOCATION_MODULE = PYPROJECT["tool"]["dagster"]["module_name"]

# A tag names one build: <package version>-<variant>-<commit>. `<git-sha>` is the committed placeholder, which is no
# valid image tag, so a release that never set the tag fails to pull rather than run whatever a node has cached.
UNIQUE_TAG = re.compile(rf"^{re.escape(VERSION)}-(cpu|cuda)-(<git-sha>|[0-9a-f]{{7,40}})$")
PLACEHOLDER = "<git-sha>"
DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the grammar of an image tag
COMPILERS = re.compile(r"(?<![\w-])(build-essential|g\+\+|gcc|clang|cmake)(?![\w-])")


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def deployment(vals: dict) -> dict:
    (only,) = vals["dagster-user-deployments"]["deployments"]
    return only


def env_of(dep: dict) -> dict:
    return {e["name"]: e.get("value") for e in dep["env"]}


# ---------------------------------------------------------------------------------------------- schema and keys

def schema_problems(vals: dict, sch: dict) -> list[str]:
    """Every schema error, with those under an anyOf (a nullable field) spelled out."""
    def flat(errors):
        for e in errors:
            yield e
            yield from flat(e.context)

    validator = jsonschema.Draft202012Validator(sch)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in flat(validator.iter_errors(vals))]


def _resolve(sch: dict, node: dict) -> dict:
    while "$ref" in node:
        node = sch["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def unknown_keys(vals, sch: dict, node: dict | None = None, path: str = "") -> list[str]:
    """Keys the chart does not define. Stricter than the chart, whose top level and user deployments accept (and
    ignore) any key: a misspelt key would otherwise do nothing, silently. Stops at Kubernetes objects."""
    node = _resolve(sch, sch if node is None else node)
    if node.get("x-kubernetes"):
        return []
    branches = [_resolve(sch, b) for b in node.get("anyOf", [node])]
    if isinstance(vals, dict):
        for branch in branches:
            if branch.get("type") == "object" and "properties" in branch:
                if branch.get("x-kubernetes"):
                    return []
                problems = []
                for key, value in vals.items():
                    if key not in branch["properties"]:
                        problems.append(f"{path}/{key}")
                    else:
                        problems += unknown_keys(value, sch, branch["properties"][key], f"{path}/{key}")
                return problems
    if isinstance(vals, list):
        for branch in branches:
            if branch.get("type") == "array" and "items" in branch:
                return [p for i, item in enumerate(vals) for p in unknown_keys(item, sch, branch["items"],
                                                                                 f"{path}[{i}]")]
    return []


def test_the_vendored_schema_is_a_valid_schema_that_names_its_source():
    sch = schema()
    jsonschema.Draft202012Validator.check_schema(sch)
    assert "dagster/dagster" in sch["$comment"] and "Apache-2.0" in sch["$comment"]
    # the chart version it was taken for is the dagster this project installs (chart version = dagster version)
    dagster_pin = re.search(r"^dagster==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert f"chart {dagster_pin}" in sch["$comment"]
    assert (SCHEMA.parent / "README.md").is_file()


def test_the_helm_values_validate_against_the_charts_schema():
    vals, sch = values(), schema()
    assert schema_problems(vals, sch) == []
    assert unknown_keys(vals, sch) == []


@pytest.mark.parametrize("break_it, expected", [
    (lambda v: deployment(v).pop("port"), "'port' is a required property"),
    (lambda v: deployment(v)["image"].pop("pullPolicy"), "'pullPolicy' is a required property"),
    (lambda v: deployment(v)["image"].update(pullPolicy="Sometimes"), "'Sometimes' is not one of"),
    (lambda v: deployment(v).update(port="3030"), "'3030' is not of type 'integer'"),
    (lambda v: deployment(v)["volumeMounts"][0].pop("mountPath"), "'mountPath' is a required property"),
    (lambda v: v["runLauncher"].update(type="K8sLauncher"), "'K8sLauncher' is not one of"),
    (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].update(imagePulPolicy="Always"),
     "Additional properties are not allowed ('imagePulPolicy'"),
    (lambda v: v["pythonLogs"].update(managedLoggers=["skim_assets"]),
     "Additional properties are not allowed ('managedLoggers'"),
    (lambda v: v["concurrency"]["pools"].update(defaultLimit="four"), "'four' is not valid under any"),
    (lambda v: v["dagsterDaemon"]["runCoordinator"].update(type="Queued"), "'Queued' is not one of"),
])
def test_the_schema_rejects_broken_values(break_it, expected):
    vals = copy.deepcopy(values())
    break_it(vals)
    problems = schema_problems(vals, schema())
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("break_it, expected", [
    (lambda v: v.update(dagsterDeamon={"enabled": True}), "/dagsterDeamon"),
    (lambda v: deployment(v).update(envSecret=[{"name": "x"}]), "/dagster-user-deployments/deployments[0]/envSecret"),
    (lambda v: deployment(v)["image"].update(pullpolicy="Always"),
     "/dagster-user-deployments/deployments[0]/image/pullpolicy"),
])
def test_keys_the_chart_would_silently_ignore_are_found(break_it, expected):
    vals = copy.deepcopy(values())
    break_it(vals)
    assert schema_problems(vals, schema()) == []  # the chart itself accepts these
    assert expected in unknown_keys(vals, schema())


# ---------------------------------------------------------------------------------------------- image tags

def _images(node, path=""):
    if isinstance(node, dict):
        if "repository" in node and "pullPolicy" in node:
            yield path, node
        for key, value in node.items():
            yield from _images(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _images(value, f"{path}[{i}]")


def tag_problems(vals: dict) -> list[str]:
    """Every image of the values is pulled by a unique tag; a policy other than Always only with such a tag (the
    chart's own advice: a fixed tag with any other policy runs a cached, stale image)."""
    problems = []
    images = list(_images(vals))
    if not images:
        problems.append("no image in the values")
    for path, image in images:
        tag = str(image.get("tag") or "")
        if not UNIQUE_TAG.match(tag):
            problems.append(f"{path}: tag {tag!r} is not <{VERSION}>-<cpu|cuda>-<commit>")
            if image["pullPolicy"] != "Always":
                problems.append(f"{path}: pullPolicy {image['pullPolicy']} with a tag that can move")
    # run and step pods run the code server's image: caching it is right only if every deployment's tag is unique
    launcher = vals["runLauncher"]["config"]["k8sRunLauncher"]
    if launcher.get("imagePullPolicy", "Always") != "Always":
        for dep in vals["dagster-user-deployments"]["deployments"]:
            if not UNIQUE_TAG.match(str(dep["image"].get("tag") or "")):
                problems.append(f"runLauncher imagePullPolicy {launcher['imagePullPolicy']} runs {dep['name']}'s "
                                "movable tag from cache")
    return problems


def test_every_image_is_pulled_by_a_unique_tag():
    vals = values()
    assert tag_problems(vals) == []
    tag = deployment(vals)["image"]["tag"]
    # the committed tag is the placeholder, which no registry can serve: an unset tag fails loudly
    assert PLACEHOLDER in tag and not DOCKER_TAG.match(tag)
    assert DOCKER_TAG.match(tag.replace(PLACEHOLDER, "3f2a9c1d0e4b"))


@pytest.mark.parametrize("tag", ["cuda", "cpu", "latest", "", None, "0.1.0-cuda", "0.0.9-cuda-3f2a9c1",
                                 "0.1.0-rocm-3f2a9c1"])
def test_a_movable_or_malformed_tag_is_refused(tag):
    vals = copy.deepcopy(values())
    deployment(vals)["image"]["tag"] = tag
    problems = tag_problems(vals)
    assert any("is not" in p for p in problems)
    assert any("pullPolicy IfNotPresent" in p for p in problems)  # the committed policy
    assert any("runLauncher imagePullPolicy" in p for p in problems)
    deployment(vals)["image"]["pullPolicy"] = "Always"
    vals["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"] = "Always"
    assert [p for p in tag_problems(vals) if "pullPolicy" in p or "imagePullPolicy" in p] == []


def test_the_helm_command_pins_the_chart_to_the_installed_dagster():
    dagster_pin = re.search(r"^dagster==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert f"helm upgrade --install skim dagster/dagster --version {dagster_pin} " in VALUES.read_text()


# ---------------------------------------------------------------------------------------------- the Dockerfile

def dockerfile_stages(text: str) -> tuple[dict, list[dict]]:
    """(global ARG defaults, stages): each stage {'from', 'name', 'instructions': [(OP, argument)]}, with line
    continuations joined and comments dropped as Docker does."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    args, stages = {}, []
    for line in lines:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            image, name = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I).groups()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), image)
            stages.append({"from": image, "name": name or "", "instructions": []})
        elif not stages:
            if op == "ARG":
                key, _, default = rest.partition("=")
                args[key] = default
        else:
            stages[-1]["instructions"].append((op, rest))
    return args, stages


def _ops(stage: dict, op: str) -> list[str]:
    return [rest for o, rest in stage["instructions"] if o == op]


def _exec_form(argument: str) -> list[str]:
    return json.loads(argument)


def dockerfile_problems(text: str, vals: dict) -> list[str]:
    problems = []
    _, stages = dockerfile_stages(text)
    if len(stages) < 2:
        return [f"{len(stages)} stage(s): a builder and a runtime stage are needed"]
    builders, final = stages[:-1], stages[-1]
    # both variants on python:3.11-slim: the CUDA libraries come with the torch/vLLM wheels
    for stage in stages:
        if not stage["from"].startswith("python:3.11-slim"):
            problems.append(f"stage {stage['name'] or '?'} is FROM {stage['from']}, not python:3.11-slim")
    # the compiler in a builder stage only; hnswlib built for any x86-64, not the build host's CPU
    if not any(COMPILERS.search(run) for b in builders for run in _ops(b, "RUN")):
        problems.append("no builder stage installs a compiler (hnswlib ships only an sdist)")
    if not any("HNSWLIB_NO_NATIVE=1" in env for b in builders for env in _ops(b, "ENV")):
        problems.append("hnswlib is built with -march=native (HNSWLIB_NO_NATIVE unset)")
    for run in _ops(final, "RUN"):
        if COMPILERS.search(run):
            problems.append(f"the runtime stage has a compiler: {run[:80]}")
        for command in re.split(r";|&&", run):
            if "pip install" in command and "--no-index" not in command:
                problems.append(f"the runtime stage installs from an index, not the builder's wheels: {command[:80]}")
    if not any(f"from={b['name']}" in run for b in builders if b["name"] for run in _ops(final, "RUN")) and \
            not any(f"--from={b['name']}" in c for b in builders if b["name"] for c in _ops(final, "COPY")):
        problems.append("the runtime stage takes nothing from the builder")
    # a numeric, non-root user (runAsNonRoot can only verify a numeric one), the one the values run as
    users = _ops(final, "USER")
    uid = users[-1].split(":")[0] if users else "0"
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"the runtime stage runs as {users[-1] if users else 'root'}: a numeric non-root USER")
    dep = deployment(vals)
    if uid.isdigit() and dep.get("podSecurityContext", {}).get("runAsUser") != int(uid):
        problems.append(f"values run the code server as {dep.get('podSecurityContext', {}).get('runAsUser')}, "
                        f"the image as {uid}")
    # the chart passes the server's command as `args`: an ENTRYPOINT would have them appended to it
    if _ops(final, "ENTRYPOINT"):
        problems.append("the runtime stage has an ENTRYPOINT; the chart's args would be appended to it")
    cmds = _ops(final, "CMD")
    command = _exec_form(cmds[-1]) if cmds else []
    if command[:3] != ["dagster", "api", "grpc"]:
        problems.append(f"the default command {command} does not serve a code location")
    module = command[command.index("--module-name") + 1] if "--module-name" in command else None
    grpc_args = dep["dagsterApiGrpcArgs"]
    values_module = grpc_args[grpc_args.index("--module-name") + 1] if "--module-name" in grpc_args else None
    if not module == values_module == CODE_LOCATION_MODULE:
        problems.append(f"code location module: image {module}, values {values_module}, "
                        f"pyproject {CODE_LOCATION_MODULE}")
    port = command[command.index("--port") + 1] if "--port" in command else None
    exposed = [p.split("/")[0] for e in _ops(final, "EXPOSE") for p in e.split()]
    if not (port and port in exposed and int(port) == dep["port"]):
        problems.append(f"port: command {port}, EXPOSE {exposed}, values {dep['port']}")
    # the artifact root: where the image points SKIM_DATA_ROOT, the values set it and mount the volume
    env_text = " ".join(_ops(final, "ENV"))
    root = re.search(r"SKIM_DATA_ROOT=(\S+)", env_text)
    mounts = {m["mountPath"] for m in dep.get("volumeMounts", [])}
    if not root or env_of(dep).get("SKIM_DATA_ROOT") != root.group(1) or root.group(1) not in mounts:
        problems.append(f"SKIM_DATA_ROOT: image {root and root.group(1)}, values {env_of(dep).get('SKIM_DATA_ROOT')}, "
                        f"mounts {sorted(mounts)}")
    return problems


def test_the_dockerfile_is_multi_stage_non_root_and_serves_the_location_the_values_name():
    assert dockerfile_problems(DOCKERFILE.read_text(), values()) == []


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


@pytest.mark.parametrize("break_it, expected", [
    (lambda t: t[t.index("FROM ${PYTHON_IMAGE} AS runtime"):], "stage(s): a builder and a runtime"),
    (lambda t: _replace(t, "USER 10001:10001", "USER root"), "a numeric non-root USER"),
    (lambda t: _replace(t, "USER 10001:10001", "USER skim"), "a numeric non-root USER"),
    (lambda t: _replace(t, "USER 10001:10001\n", ""), "runs as root"),
    (lambda t: _replace(t, "USER 10001:10001", "USER 10002"), "the image as 10002"),
    (lambda t: _replace(t, "USER 10001:10001", "USER 10001:10001\nRUN apt-get install -y g++"),
     "the runtime stage has a compiler"),
    (lambda t: _replace(t, "install -y --no-install-recommends build-essential", "install -y curl"),
     "no builder stage installs a compiler"),
    (lambda t: _replace(t, " HNSWLIB_NO_NATIVE=1", ""), "-march=native"),
    (lambda t: _replace(t, "ARG PYTHON_IMAGE=python:3.11-slim-bookworm",
                        "ARG PYTHON_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04"), "not python:3.11-slim"),
    (lambda t: _replace(t, "EXPOSE 3030", "EXPOSE 4000"), "port:"),
    (lambda t: _replace(t, '"--port", "3030"', '"--port", "4000"'), "port:"),
    (lambda t: _replace(t, '"--module-name", "skim_assets.definitions"', '"--module-name", "skim_assets"'),
     "code location module"),
    (lambda t: _replace(t, "EXPOSE 3030", 'EXPOSE 3030\nENTRYPOINT ["tini", "--"]'), "ENTRYPOINT"),
    (lambda t: _replace(t, "SKIM_DATA_ROOT=/data", "SKIM_DATA_ROOT=/srv"), "SKIM_DATA_ROOT"),
    (lambda t: _replace(t, "pip install --no-index --only-binary :all: --find-links /wheels -c",
                        "pip install --find-links /wheels -c"), "installs from an index"),
])
def test_the_dockerfile_checks_find_a_broken_image(break_it, expected):
    problems = dockerfile_problems(break_it(DOCKERFILE.read_text()), values())
    assert any(expected in p for p in problems), problems


def test_the_values_and_the_image_disagree_and_it_is_found():
    vals = copy.deepcopy(values())
    deployment(vals)["port"] = 4000
    deployment(vals)["dagsterApiGrpcArgs"] = ["--module-name", "skim_assets.other"]
    problems = dockerfile_problems(DOCKERFILE.read_text(), vals)
    assert any(p.startswith("port:") for p in problems) and any("code location module" in p for p in problems)


def test_both_variants_install_what_they_promise():
    text = DOCKERFILE.read_text()
    _, stages = dockerfile_stages(text)
    build = " ".join(_ops(stages[0], "RUN"))
    # CPU: torch's +cpu build from the CPU index, the rest under constraints.txt exactly
    assert re.search(r"cpu\)\s+sed 's/\^\\\(torch==\[\^\+\]\*\\\)\$/\\1\+cpu/' constraints.txt", build), build
    assert '--index-url "${TORCH_CPU_INDEX}"' in build and "extras=k8s;" in build
    # CUDA: torch and vLLM from PyPI (their CUDA wheels); only the numpy pin, which vLLM cannot take, dropped
    assert re.search(r"cuda\)\s+grep -v '\^numpy==' constraints.txt > /tmp/constraints.txt; extras=k8s,gpu", build)
    assert {"gpu", "k8s"} <= set(PYPROJECT["project"]["optional-dependencies"])
    # torch's version is the one constraints.txt pins (one line), and each build checks which torch it got
    assert len(re.findall(r"^torch==", (ROOT / "constraints.txt").read_text(), re.M)) == 1
    assert "grep '^torch==' constraints.txt" in build
    assert "torch.version.cuda" in " ".join(_ops(stages[-1], "RUN"))


def test_the_build_context_leaves_out_the_venv_and_the_data():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv*" in ignored and "data" in ignored and ".git" in ignored


def test_the_kubernetes_instance_config_is_one_dagster_k8s_accepts():
    dagster_k8s = pytest.importorskip("dagster_k8s")
    from dagster._config import validate_config

    launcher = yaml.safe_load(INSTANCE.read_text())["run_launcher"]
    assert launcher["class"] == "K8sRunLauncher"
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert launcher["config"]["image_pull_policy"] == deployment(values())["image"]["pullPolicy"]
    broken = {**launcher["config"], "image_pul_policy": "Always"}
    assert not validate_config(dagster_k8s.K8sRunLauncher.config_type(), broken).success
