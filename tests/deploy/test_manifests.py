"""deploy/k8s and deploy/kserve against their schemas, offline, and against each other.

Built-in kinds are checked with kubernetes-validate's bundled Kubernetes schemas in its
strict mode (an unknown field is an error, as `kubectl apply` makes it). The custom
resources (ServiceMonitor, InferenceService) are checked with jsonschema against the
openAPIV3Schema of their official CRDs, vendored in tests/deploy/schemas/ (each file says
where it comes from), made strict the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S = REPO / "deploy" / "k8s" / "yolo-edge.yaml"
ADAPTER = REPO / "deploy" / "k8s" / "prometheus-adapter-values.yaml"
KSERVE = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
#: the oldest Kubernetes the manifests are written for (PDB unhealthyPodEvictionPolicy is GA
#: in 1.31), and the newest that kubernetes-validate knows
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve-inferenceservice-v1beta1.json",
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in _docs(path)}


def _strict(schema: dict) -> dict:
    """A structural CRD schema that refuses unknown fields, like the API server's strict field validation."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def _errors(doc: dict) -> list[str]:
    """Every schema error of one object, as 'path: message'."""
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _crd_validator(*key).iter_errors(doc)]
        # metadata is `type: object` in a CRD schema: check it as the ObjectMeta it is
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        try:
            kubernetes_validate.validate(meta, K8S_VERSIONS[-1], strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"metadata: {exc.message}")
        return found
    found = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"[k8s {version}] {'.'.join(map(str, exc.path))}: {exc.message}")
    return found


MANIFESTS = [(path.relative_to(REPO).as_posix(), i, doc) for path in (K8S, KSERVE) for i, doc in enumerate(_docs(path))]


@pytest.mark.parametrize("where,index,doc", MANIFESTS, ids=[f"{w}#{i}-{d['kind']}" for w, i, d in MANIFESTS])
def test_manifest_matches_its_schema(where, index, doc):
    assert _errors(doc) == []


@pytest.mark.parametrize("path,mutate,needle", [
    (K8S, lambda d: d["Deployment"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
     .update(readOnlyRootFilesytem=True), "readOnlyRootFilesytem"),  # a typo
    (K8S, lambda d: d["HorizontalPodAutoscaler"]["spec"].update(minReplicas="2"), "'2' is not of type"),
    (K8S, lambda d: d["PodDisruptionBudget"]["spec"].update(unhealthyPodEvictionPolicy=5), "5 is not of type"),
    (K8S, lambda d: d["ServiceMonitor"]["spec"]["endpoints"][0].update(interval="15 seconds"), "15 seconds"),
    (K8S, lambda d: d["ServiceMonitor"]["spec"].update(endpoint=[]), "endpoint"),
    (KSERVE, lambda d: d["InferenceService"]["spec"]["predictor"].update(scaleMetric="gpu"), "gpu"),
    (KSERVE, lambda d: d["InferenceService"]["spec"]["predictor"].update(minReplica=0), "minReplica"),
    (KSERVE, lambda d: d["InferenceService"]["spec"]["predictor"]["model"].update(protocolVersion=2), "2 is not of type"),
    (KSERVE, lambda d: d["InferenceService"]["spec"]["predictor"]["model"]["modelFormat"].pop("name"), "'name' is a required"),
    (KSERVE, lambda d: d["InferenceService"]["metadata"].update(labels={"a": 1}), "metadata"),
])
def test_the_validators_catch_mistakes(path, mutate, needle):
    docs = _by_kind(path)
    mutate(docs)
    errors = [e for doc in docs.values() for e in _errors(doc)]
    assert any(needle in e for e in errors), errors


def test_no_manifest_relies_on_a_pruned_part_of_a_vendored_schema():
    """The vendored InferenceService schema leaves out subtrees we do not use; keep it so."""
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[("serving.kserve.io/v1beta1", "InferenceService")]).read_text())

    def pruned_paths(node, path=()):
        if isinstance(node, dict):
            if node.get("x-yolo-edge-pruned"):
                yield path
            for key, value in node.get("properties", {}).items():
                yield from pruned_paths(value, path + (key,))

    pruned = list(pruned_paths(schema))
    assert ("spec", "explainer") in pruned and ("spec", "predictor", "workerSpec") in pruned
    for doc in _docs(KSERVE):
        for path in pruned:
            node = doc
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            assert node is None, f"{'.'.join(path)} is set but its schema was pruned: vendor it whole"


# -- what the manifests must say ------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    return _by_kind(K8S)


def test_pod_runs_restricted(k8s):
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
    # a read-only image needs its writable places as emptyDirs: /tmp and BentoML's home
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "/tmp" in mounts and env["BENTOML_HOME"] in mounts


def test_pod_lands_on_gpu_nodes(k8s):
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_autoscaling_follows_requests_in_flight_like_bentocloud(k8s):
    hpa = k8s["HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"  # the service's own load, not CPU
    adapter = yaml.safe_load(ADAPTER.read_text())
    (rule,) = adapter["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}  # per pod, as a Pods metric needs
    # the same target as BentoCloud's autoscaler and the service's own traffic setting
    cloud = yaml.safe_load((REPO / "bentos" / "deployment.yaml").read_text())
    target = cloud["services"]["YoloEdge"]["config_overrides"]["traffic"]["concurrency"]
    assert int(metric["pods"]["target"]["averageValue"]) == target
    assert hpa["spec"]["minReplicas"] >= 2  # the budget below leaves one serving


def test_disruption_budget_and_service_monitor_select_the_pods(k8s):
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    pdb, sm, svc = k8s["PodDisruptionBudget"], k8s["ServiceMonitor"], k8s["Service"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < k8s["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    # the job label is the Service's name: what deploy/prometheus and the dashboard select
    assert svc["metadata"]["name"] == "yolo-edge" and "jobLabel" not in sm["spec"]


def test_kserve_scales_triton_to_zero_over_protocol_v2():
    (isvc,) = _docs(KSERVE)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    pred = isvc["spec"]["predictor"]
    assert pred["minReplicas"] == 0 < pred["maxReplicas"]
    assert (pred["scaleMetric"], pred["scaleTarget"]) == ("concurrency", 16)
    model = pred["model"]
    assert model["runtime"] == "kserve-tritonserver" and model["modelFormat"]["name"] == "triton"
    assert model["protocolVersion"] == "v2"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pred["tolerations"]
    assert model["securityContext"]["allowPrivilegeEscalation"] is False
