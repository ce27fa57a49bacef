"""Every Kubernetes object in cluster/ against the schema the API server applies to it.

KubeRay objects (RayCluster, RayJob, RayCronJob) are checked against the operator's own CRD schemas
(tests/data/kuberay/, copied from ray-project/kuberay, Apache-2.0). The API server prunes unknown
fields of a CRD object silently unless the client asks for strict field validation (kubectl's
default since Kubernetes 1.27 rejects them), so an object schema that lists its properties is
closed here, as strict validation does: a misspelt field fails instead of vanishing.

The Kubernetes core OpenAPI schema (batch/v1 CronJob, v1 PersistentVolumeClaim) is not available
offline. Their pod template and claim spec are checked against the core schemas that KubeRay's
CRD embeds (PodTemplateSpec, PersistentVolumeClaimSpec); their own few top-level fields against a
closed schema written below from the Kubernetes API reference.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SCHEMAS = ROOT / "tests" / "data" / "kuberay"
KUBERAY_KINDS = ("RayCluster", "RayJob", "RayCronJob")


def closed(schema: object) -> object:
    """A copy of an OpenAPI schema in which every object that lists `properties` and says nothing
    of others (no additionalProperties, no x-kubernetes-preserve-unknown-fields) allows no others."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k != "enum" else v for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(kind: str) -> dict:
    data = json.loads((SCHEMAS / f"{kind}.v1.json").read_text())
    assert data["kind"] == kind and data["apiVersion"] == "ray.io/v1"
    return closed(data["schema"])


def pod_template_schema() -> dict:
    head = crd_schema("RayCluster")["properties"]["spec"]["properties"]["headGroupSpec"]
    return head["properties"]["template"]


def claim_spec_schema() -> dict:
    volume = pod_template_schema()["properties"]["spec"]["properties"]["volumes"]["items"]
    return volume["properties"]["ephemeral"]["properties"]["volumeClaimTemplate"]["properties"]["spec"]


def _obj(props: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


INT, STR, BOOL = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
META = _obj({"name": STR, "namespace": STR, "labels": {"type": "object", "additionalProperties": STR},
             "annotations": {"type": "object", "additionalProperties": STR}})


def cron_job_schema() -> dict:
    """batch/v1 CronJob: CronJobSpec, JobTemplateSpec and JobSpec fields as the Kubernetes API
    reference lists them (v1.31); the pod template is KubeRay's embedded PodTemplateSpec."""
    job_spec = _obj({
        "parallelism": INT, "completions": INT, "activeDeadlineSeconds": INT, "podFailurePolicy": {},
        "successPolicy": {}, "backoffLimit": INT, "backoffLimitPerIndex": INT, "maxFailedIndexes": INT,
        "selector": {}, "manualSelector": BOOL, "template": pod_template_schema(),
        "ttlSecondsAfterFinished": INT, "completionMode": {"enum": ["NonIndexed", "Indexed"]},
        "suspend": BOOL, "podReplacementPolicy": STR, "managedBy": STR}, ("template",))
    spec = _obj({
        "schedule": STR, "timeZone": STR, "startingDeadlineSeconds": INT,
        "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]}, "suspend": BOOL,
        "jobTemplate": _obj({"metadata": META, "spec": job_spec}), "successfulJobsHistoryLimit": INT,
        "failedJobsHistoryLimit": INT}, ("schedule", "jobTemplate"))
    return _obj({"apiVersion": {"const": "batch/v1"}, "kind": {"const": "CronJob"}, "metadata": META,
                 "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


def claim_schema() -> dict:
    return _obj({"apiVersion": {"const": "v1"}, "kind": {"const": "PersistentVolumeClaim"}, "metadata": META,
                 "spec": claim_spec_schema()}, ("apiVersion", "kind", "metadata", "spec"))


def schema_of(doc: dict) -> dict:
    kind = doc.get("kind")
    if kind in KUBERAY_KINDS:
        assert doc["apiVersion"] == "ray.io/v1", doc["apiVersion"]
        return crd_schema(kind)
    if kind == "CronJob":
        return cron_job_schema()
    if kind == "PersistentVolumeClaim":
        return claim_schema()
    raise AssertionError(f"no schema for kind {kind!r}: every object in cluster/ must be validated")


def errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(schema_of(doc))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def manifests() -> list[tuple[str, int, dict]]:
    """(file, index, object) of every Kubernetes document in cluster/ (the launcher config is not
    one: tests/test_cluster_files.py checks it against Ray's own schema)."""
    out = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        if path.name == "ray-cluster.yaml":
            assert all("kind" not in d for d in docs)
            continue
        out += [(path.name, i, d) for i, d in enumerate(docs)]
    return out


def test_every_object_in_cluster_is_one_of_the_validated_kinds():
    kinds = [(name, d["kind"]) for name, _, d in manifests()]
    assert {k for _, k in kinds} == {*KUBERAY_KINDS, "CronJob", "PersistentVolumeClaim"}, kinds
    for _, _, d in manifests():
        schema_of(d)


@pytest.mark.parametrize(("name", "index", "doc"), manifests(),
                         ids=[f"{n}#{i}-{d['kind']}" for n, i, d in manifests()])
def test_cluster_object_validates(name, index, doc):
    assert errors(doc) == [], f"{name} document {index}"


def _pod_specs(doc: dict) -> list[dict]:
    """Every pod spec inside a KubeRay object or a CronJob (head, worker groups, submitter)."""
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] == "RayCronJob":
        spec = spec["jobTemplate"]
    cluster = spec.get("rayClusterSpec", spec)
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    if "submitterPodTemplate" in spec:
        pods.append(spec["submitterPodTemplate"]["spec"])
    return pods


def test_every_pod_takes_the_aws_variables_from_the_secret():
    """Head, workers and submitters: AWS_* for s3:// paths reach every container from one Secret."""
    seen = 0
    for name, _, doc in manifests():
        if doc["kind"] == "PersistentVolumeClaim":
            continue
        for pod in _pod_specs(doc):
            for container in pod["containers"]:
                refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
                assert refs == ["mig-ray-s3"], (name, container["name"])
                seen += 1
    assert seen >= 12  # rayjob 4, nightly cronjob 3 + 1, raycronjob 4


def _first(doc: object, key: str) -> list:
    """The path (list of keys and indices) to the first mapping that holds `key`, depth first."""
    if isinstance(doc, dict):
        if key in doc:
            return [key]
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return []
    for k, v in items:
        sub = _first(v, key)
        if sub:
            return [k, *sub]
    return []


def _rename(doc: dict, key: str, new: str) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = _first(doc, key)
    target = doc
    for p in parents:
        target = target[p]
    target[new] = target.pop(last)
    return doc


TYPOS = [("rayStartParams", "rayStartParam"), ("envFrom", "envfrom"), ("secretRef", "secretref"),
         ("mountPath", "mountpath"), ("concurrencyPolicy", "concurrency"), ("accessModes", "accessMode"),
         ("shutdownAfterJobFinishes", "shutdownAfterJobFinish")]


@pytest.mark.parametrize(("key", "typo"), TYPOS)
def test_a_misspelt_field_fails(key, typo):
    docs = [d for _, _, d in manifests() if _first(d, key)]
    assert docs, key
    for doc in docs:
        assert errors(doc) == []
        bad = errors(_rename(doc, key, typo))
        assert any(repr(typo) in e for e in bad), bad


def test_a_wrong_type_fails():
    (job,) = [d for _, _, d in manifests() if d["kind"] == "RayJob"]
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "4"
    assert any("replicas" in e and "integer" in e for e in errors(bad))
    (cron,) = [d for _, _, d in manifests() if d["kind"] == "CronJob"]
    bad = copy.deepcopy(cron)
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 1
    assert any("env" in e and "string" in e for e in errors(bad))
