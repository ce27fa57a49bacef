"""cluster/: the launcher config passes Ray's own schema; the Kubernetes manifests parse and carry
the fields KubeRay and the CronJob need (entrypoints, auth, shared volume, loopback/ClusterIP)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def by_kind(items: list[dict], kind: str) -> dict:
    found = [d for d in items if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} documents"
    return found[0]


def test_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"]["gpu.worker"]["resources"]["GPU"] == 1
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.")
    mounts = [o.split()[1].split(":")[1] for o in config["docker"]["run_options"] if o.startswith("-v ")]
    assert mounts == ["/data", "/shared", "/models"]  # where jobs/*.yaml look
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "--head" in head


def _ray_cluster_ok(spec: dict) -> None:
    assert spec["rayVersion"].startswith("2.60.")
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    pods = [head["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mig-ray-auth"
        mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"] if m["name"] == "data"}
        assert mounts == {"/data": "data", "/shared": "shared", "/models": "models"}  # as jobs/*.yaml use
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == ["mig-ray-data"]
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_kuberay_rayjob():
    items = docs("kuberay-rayjob.yaml")
    pvc = by_kind(items, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "mig-ray-data" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    job = by_kind(items, "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"] == "mig-ray run jobs/tulu3-cluster.yaml"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/mig_ray"
    assert runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    submitter = spec["submitterPodTemplate"]["spec"]["containers"][0]
    assert {e["name"] for e in submitter["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    _ray_cluster_ok(spec["rayClusterSpec"])


def test_nightly_cronjob_submits_to_the_nightly_cluster():
    items = docs("nightly-cronjob.yaml")
    cluster = by_kind(items, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    _ray_cluster_ok(cluster["spec"])
    cron = by_kind(items, "CronJob")
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAY_ADDRESS"] == f"http://{cluster['metadata']['name']}-head-svc:8265"
    script = container["args"][0]
    submit = shlex.split(re.search(r"ray job submit[^\n]*\n[^\n]*", script).group(0).replace("\\\n", " "))
    assert submit[submit.index("--") + 1:] == ["mig-ray", "run", "jobs/nightly.yaml", "--incremental"]
    assert "--working-dir" in submit and "--submission-id" in submit


def test_crontab_example_lines_are_valid():
    lines = [x for x in (CLUSTER / "crontab.example").read_text().splitlines() if x.strip()
             and not x.lstrip().startswith("#") and not re.match(r"[A-Z_]+=", x)]
    assert lines
    for line in lines:
        fields = line.split(None, 5)
        assert len(fields) == 6 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5]), line
    assert any("mig-ray run jobs/nightly.yaml --incremental" in x and "mig-ray report" in x for x in lines)
    # jobs/nightly.yaml joins a running Ray (address auto): the line starts one first when none runs
    assert yaml.safe_load((ROOT / "jobs" / "nightly.yaml").read_text())["ray"]["address"] == "auto"
    for line in lines:
        if "mig-ray run jobs/nightly.yaml" in line:
            start = line.index("ray status >/dev/null 2>&1 || .venv/bin/ray start --head")
            assert start < line.index("mig-ray run jobs/nightly.yaml"), line


def _absolute_paths(node) -> list[str]:
    if isinstance(node, dict):
        return [p for v in node.values() for p in _absolute_paths(v)]
    if isinstance(node, list):
        return [p for v in node for p in _absolute_paths(v)]
    return [node] if isinstance(node, str) and node.startswith("/") else []


def test_cluster_jobs_only_use_paths_the_manifests_mount():
    for name in ("tulu3-cluster.yaml", "nightly.yaml"):
        paths = _absolute_paths(yaml.safe_load((ROOT / "jobs" / name).read_text()))
        assert paths, name
        assert all(p.split("/")[1] in {"data", "shared", "models"} for p in paths), (name, paths)
