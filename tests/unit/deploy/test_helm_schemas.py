"""The schemas the chart is validated against (deploy/helm/schemas): the conversions that made
them (deploy/helm/schema_convert.py), and kubeconform with them, offline, on the rendered
chart: every object valid, and an object with a field its kind lacks refused, so the
validation is not vacuous. Needs kubeconform and helm in .tools/bin (`make tools`)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from deploy.helm import chart
from deploy.helm.chart import CHART, render
from deploy.helm.schema_convert import Bindings, crd_schema, crd_versions, standalone

pytestmark = pytest.mark.unit

KUBECONFORM = chart.ROOT / ".tools" / "bin" / "kubeconform"
SCHEMAS = chart.ROOT / "deploy" / "helm" / "schemas"
#: As mk/helm.mk has kubeconform look them up.
LOCATIONS = [
    f"{SCHEMAS}/kubernetes-v{chart.KUBE_VERSION}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
    f"{SCHEMAS}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
]


def _require_tools() -> None:
    for tool in (chart.HELM, KUBECONFORM):
        if tool.exists():
            continue
        message = f"{tool.name} is not installed: run `make tools` (it builds it into {tool})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"SKIPPED LOUDLY: {message}")


def _kubeconform(documents: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    args = [str(KUBECONFORM), "-strict", "-summary", "-output", "text"]
    args += [f"-schema-location={location}" for location in LOCATIONS]
    return subprocess.run(
        [*args, "-"],
        input=yaml.safe_dump_all(documents),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_object_of_the_full_chart_is_valid_offline() -> None:
    _require_tools()
    objects = render([CHART / "ci" / "full-values.yaml"])
    done = _kubeconform(objects)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Valid: {len(objects)}, Invalid: 0, Errors: 0, Skipped: 0" in done.stdout


@pytest.mark.parametrize(
    ("kind", "path", "field"),
    [
        ("Deployment", ("spec", "template", "spec"), "terminationGracePeriod"),
        ("KafkaTopic", ("spec",), "retention"),
        ("Cluster", ("spec", "bootstrap", "initdb"), "postInitSql"),
        ("ScaledObject", ("spec",), "maxReplicas"),
        ("ServiceMonitor", ("spec",), "endpoint"),
    ],
)
def test_a_field_the_kind_lacks_is_refused(kind: str, path: tuple[str, ...], field: str) -> None:
    _require_tools()
    (obj, *_) = [o for o in render([CHART / "ci" / "full-values.yaml"]) if o["kind"] == kind]
    node = obj
    for key in path:
        node = node[key]  # type: ignore[assignment,index]
    node[field] = 1  # type: ignore[index]
    done = _kubeconform([obj])
    assert done.returncode != 0
    assert f"additional properties '{field}' not allowed" in done.stdout, done.stdout


# -- the conversions -----------------------------------------------------------------------


def test_a_kind_takes_the_definitions_it_references_and_no_others() -> None:
    definitions = {
        "a.Spec": {"properties": {"port": {"$ref": "#/$defs/a.Port", "description": "x"}}},
        "a.Port": {"type": "integer"},
        "a.Unused": {"type": "string"},
    }
    kind = {"$id": "k", "properties": {"spec": {"$ref": "/api/_definitions.json#/$defs/a.Spec"}}}
    out = standalone(kind, definitions)
    assert out["properties"]["spec"] == {"$ref": "#/$defs/a.Spec"}
    assert set(out["$defs"]) == {"a.Spec", "a.Port"}
    assert "description" not in out["$defs"]["a.Spec"]["properties"]["port"]
    with pytest.raises(KeyError, match="a.Missing"):
        standalone({"$ref": "#/$defs/a.Missing"}, definitions)


def test_a_crds_openapi_becomes_strict_json_schema() -> None:
    openapi = {
        "type": "object",
        "description": "dropped",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "port": {"x-kubernetes-int-or-string": True},
                    "note": {"type": "string", "nullable": True},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "open": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                    "description": {"type": "string"},
                },
            }
        },
    }
    spec = crd_schema(openapi)["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert spec["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in spec["properties"]["config"]
    assert "additionalProperties" not in spec["properties"]["open"], "it keeps unknown fields"
    assert "description" in spec["properties"], "a field named description stays"
    crd = {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": openapi}}]}}
    assert list(crd_versions(crd)) == ["v1"]


DTS = """
export interface ThingProps {
    /**
     * @schema Thing#metadata
     */
    readonly metadata: ApiObjectMetadata;
    /**
     * @schema Thing#spec
     */
    readonly spec: ThingSpec;
}
export interface ThingSpec {
    /**
     * @schema ThingSpec#postInitSQL
     */
    readonly postInitSql?: string[];
    /**
     * @schema ThingSpec#instances
     */
    readonly instances: number;
    /**
     * @schema ThingSpec#mode
     */
    readonly mode?: ThingSpecMode;
    /**
     * @schema ThingSpec#limits
     */
    readonly limits?: {
        [key: string]: ThingSpecLimits;
    };
    /**
     * @schema ThingSpec#child
     */
    readonly child?: ThingSpec;
}
export declare enum ThingSpecMode {
    /** fast */
    FAST = "fast",
    /** slow */
    SLOW = "slow"
}
export declare class ThingSpecLimits {
    readonly value: number | string;
    static fromNumber(value: number): ThingSpecLimits;
    static fromString(value: string): ThingSpecLimits;
    private constructor();
}
"""


def test_cdk8s_bindings_give_back_names_types_enums_and_required_fields() -> None:
    schema = Bindings(DTS).schema("ThingProps", "example.dev/v1", "Thing")
    assert schema["required"] == ["apiVersion", "kind", "metadata", "spec"]
    assert schema["properties"]["kind"] == {"type": "string", "enum": ["Thing"]}
    spec = schema["$defs"]["ThingSpec"]
    assert spec["required"] == ["instances"] and spec["additionalProperties"] is False
    props = spec["properties"]
    assert props["postInitSQL"] == {"type": "array", "items": {"type": "string"}}
    assert props["mode"] == {"enum": ["fast", "slow"]}
    assert props["limits"]["additionalProperties"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}]
    }
    assert props["child"] == {"$ref": "#/$defs/ThingSpec"}, "a type that contains itself"
