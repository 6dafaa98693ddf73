"""The policy CRDs' schemas: generated, structural, and in agreement with the engine.

The API server is the real judge (the lab applies these CRDs); here a small validator for
the subset of OpenAPI v3 the generator uses, with CEL rules evaluated by celpy and the
Kubernetes IP/CIDR library functions written out, checks that what the engine accepts the
schema accepts, and that the malformed policies both refuse name the same field.
Its length is mostly those cases, written out as data.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import celpy
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septum.operator import crdschema
from septum.operator.engine.errors import InvalidPolicy
from septum.operator.engine.parse import parse_policy
from septum.operator.engine.parse_septum import ENTITIES
from septum.wellknown.icmp import ICMPV4_TYPES, ICMPV6_TYPES

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def _load_gen_crds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "scripts" / "gen-crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema(clusterwide: bool) -> dict[str, Any]:
    return crdschema.policy_schema(clusterwide)


# ---- (a) the committed files are the generator's output -------------------------------------


@pytest.mark.parametrize("name", sorted(crdschema.POLICY_CRD_FILES))
def test_committed_crds_are_generated(name: str) -> None:
    gen = _load_gen_crds()
    expected = gen.render(crdschema.POLICY_CRD_FILES[name])
    assert (CRDS / name).read_text() == expected, "stale: run .venv/bin/python scripts/gen-crds.py"


def test_the_top_level_crds_folder_is_the_charts() -> None:
    assert CRDS.resolve() == (ROOT / "helm" / "septum" / "crds").resolve()


# ---- (b) structural ---------------------------------------------------------------------------

_KEYWORDS = {
    "type", "format", "description", "properties", "additionalProperties", "items", "required",
    "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
    "maxProperties", "x-kubernetes-validations", "x-kubernetes-int-or-string",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "anyOf",
}  # fmt: skip
# Inside anyOf / not only value validations, on fields the outer schema declares.
_JUNCTOR_KEYWORDS = {
    "properties", "required", "enum", "pattern", "minItems", "maxItems", "not", "minLength",
}  # fmt: skip
_TYPES = {"object", "array", "string", "integer", "boolean"}


def _walk(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def structural_errors(schema: Mapping[str, Any]) -> list[str]:
    """What makes a schema non-structural (or unbudgeted for CEL), by schema path."""
    errors: list[str] = []
    for path, node in _walk(schema):
        where = path or "<root>"
        errors += [f"{where}: keyword {k}" for k in node if k not in _KEYWORDS]
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node:
                errors.append(f"{where}: int-or-string with a type")
            continue
        if node.get("type") not in _TYPES:
            errors.append(f"{where}: type {node.get('type')!r}")
            continue
        if "properties" in node and "additionalProperties" in node:
            errors.append(f"{where}: properties and additionalProperties")
        if ("properties" in node or "additionalProperties" in node) and node["type"] != "object":
            errors.append(f"{where}: properties on a {node['type']}")
        if (node["type"] == "array") != ("items" in node):
            errors.append(f"{where}: items iff array")
        for req in node.get("required", []):
            if req not in node.get("properties", {}):
                errors.append(f"{where}: required {req} is not a property")
        for branch in node.get("anyOf", []):
            errors += _junctor_errors(branch, node, where)
        for validation in node.get("x-kubernetes-validations", []):
            if set(validation) - {"rule", "message", "fieldPath"} or "message" not in validation:
                errors.append(f"{where}: validation {validation}")
    return errors


def _junctor_errors(branch: Mapping[str, Any], outer: Mapping[str, Any], where: str) -> list[str]:
    errors = [f"{where}: anyOf keyword {k}" for k in branch if k not in _JUNCTOR_KEYWORDS]
    for name, sub in branch.get("properties", {}).items():
        if name not in outer.get("properties", {}):
            errors.append(f"{where}: anyOf names {name}, which the schema does not declare")
        else:
            errors += _junctor_errors(sub, outer["properties"][name], f"{where}.{name}")
    if "not" in branch:
        errors += _junctor_errors(branch["not"], outer, where)
    return errors


def unbounded_cel_paths(schema: Mapping[str, Any]) -> list[str]:
    """CEL rules under a list or map with no maxItems / maxProperties: the cost is unbounded."""
    bad: list[str] = []

    def visit(node: Mapping[str, Any], path: str, bounded: bool) -> None:
        if node.get("x-kubernetes-validations") and not bounded:
            bad.append(path or "<root>")
        for name, sub in node.get("properties", {}).items():
            visit(sub, f"{path}.{name}", bounded)
        if isinstance(node.get("additionalProperties"), Mapping):
            visit(node["additionalProperties"], f"{path}{{}}", bounded and "maxProperties" in node)
        if "items" in node:
            visit(node["items"], f"{path}[]", bounded and "maxItems" in node)

    visit(schema, "", True)
    return bad


@pytest.mark.parametrize("clusterwide", [False, True])
def test_schema_is_structural(clusterwide: bool) -> None:
    schema = _schema(clusterwide)
    assert structural_errors(schema) == []
    assert unbounded_cel_paths(schema) == []
    assert "x-kubernetes-preserve-unknown-fields" not in yaml.safe_dump(schema)


def test_the_structural_checker_finds_faults() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"properties": {}},
            "b": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "c": {"type": "array"},
            "d": {"type": "string", "x-kubernetes-preserve-unknown-fields": True},
            "e": {
                "type": "array",
                "items": {"type": "string", "x-kubernetes-validations": [{"rule": "true"}]},
            },
            "f": {"type": "object", "anyOf": [{"properties": {"g": {"type": "string"}}}]},
        },
    }
    errors = structural_errors(bad)
    assert [e.split(":")[0] for e in errors] == [".a", ".b", ".c", ".d", ".e[]", ".f"]
    assert unbounded_cel_paths(bad) == [".e[]"]


# ---- a validator for the subset of OpenAPI the generator uses ----------------------------------


_CEL_ENV = celpy.Environment()
_CEL_PROGRAMS: dict[str, Any] = {}


def _cel(expression: str, value: Any) -> bool:
    if expression not in _CEL_PROGRAMS:
        _CEL_PROGRAMS[expression] = _CEL_ENV.program(_CEL_ENV.compile(expression))
    result = _CEL_PROGRAMS[expression].evaluate({"self": celpy.json_to_cel(value)})
    if isinstance(result, Exception):
        raise result
    return bool(result)


def _type_error(schema: Mapping[str, Any], value: Any) -> str | None:
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return None if ok else "must be an integer or a string"
    kind = schema.get("type")
    if kind is None:
        return "no type"
    checks = {
        "object": lambda v: isinstance(v, Mapping),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return None if checks[kind](value) else f"must be of type {kind}"


def _satisfies(branch: Mapping[str, Any], value: Any) -> bool:
    """A value against an anyOf branch or a not (value validations only)."""
    if "enum" in branch and value not in branch["enum"]:
        return False
    if isinstance(value, str):
        if "pattern" in branch and not re.search(branch["pattern"], value):
            return False
        if len(value) < branch.get("minLength", 0):
            return False
    if isinstance(value, list):
        if not branch.get("minItems", 0) <= len(value) <= branch.get("maxItems", len(value)):
            return False
    if isinstance(value, Mapping):
        if any(key not in value for key in branch.get("required", [])):
            return False
        for key, sub in branch.get("properties", {}).items():
            if key in value and not _satisfies(sub, value[key]):
                return False
    return not ("not" in branch and _satisfies(branch["not"], value))


def validate(schema: Mapping[str, Any], value: Any, path: str = "") -> list[tuple[str, str]]:
    """(field path, message) for every violation, as kubectl --validate=strict reports them."""
    error = _type_error(schema, value)
    if error:
        return [(path, error)]
    errors: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append((path, f"unsupported value {value!r}"))
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            errors.append((path, "too long"))
        if len(value) < schema.get("minLength", 0):
            errors.append((path, "too short"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((path, f"does not match {schema['pattern']}"))
    if isinstance(value, int) and not isinstance(value, bool):
        if value > schema.get("maximum", value) or value < schema.get("minimum", value):
            errors.append((path, "out of range"))
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            errors.append((path, f"must have at most {schema['maxItems']} items"))
        for i, item in enumerate(value):
            errors += validate(schema["items"], item, f"{path}[{i}]")
    if isinstance(value, Mapping):
        if len(value) > schema.get("maxProperties", len(value)):
            errors.append((path, "too many properties"))
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub_path = f"{path}.{key}" if path else key
            if sub_path == "metadata":
                continue  # ObjectMeta: the API server's own schema
            if props is not None and key in props:
                errors += validate(props[key], item, sub_path)
            elif isinstance(extra, Mapping):
                errors += validate(extra, item, sub_path)
            else:
                errors.append((sub_path, "unknown field"))
        for key in schema.get("required", []):
            if key not in value:
                errors.append((f"{path}.{key}" if path else key, "Required value"))
    if "anyOf" in schema and not any(_satisfies(b, value) for b in schema["anyOf"]):
        errors.append(
            (path, f"must validate at least one schema (anyOf): {schema.get('description', '')}")
        )
    if not errors:
        # The API server runs a node's rules on a value of the right shape; so does this.
        for validation in schema.get("x-kubernetes-validations", []):
            at = path + validation.get("fieldPath", "")
            try:
                ok = _cel(validation["rule"], value)
            except Exception as err:  # noqa: BLE001 - an evaluation error refuses, as in the API server
                errors.append((at, f"{validation['message']} (evaluation error: {err})"))
                continue
            if not ok:
                errors.append((at, validation["message"]))
    return errors


def schema_errors(policy: Mapping[str, Any]) -> list[tuple[str, str]]:
    clusterwide = policy["kind"] == "SeptumClusterwideNetworkPolicy"
    body = {k: v for k, v in policy.items()}
    return validate(_schema(clusterwide), body)


def engine_errors(policy: Mapping[str, Any]) -> list[str]:
    try:
        parse_policy(policy)
    except InvalidPolicy as err:
        return [e.path for e in err.errors]
    return []


# ---- the policies ----------------------------------------------------------------------------


def snp(spec: Any = None, *, specs: Any = None, clusterwide: bool = False) -> dict[str, Any]:
    kind = "SeptumClusterwideNetworkPolicy" if clusterwide else "SeptumNetworkPolicy"
    meta: dict[str, Any] = {"name": "p"}
    if not clusterwide:
        meta["namespace"] = "default"
    obj: dict[str, Any] = {"apiVersion": "septum.io/v2", "kind": kind, "metadata": meta}
    if spec is not None:
        obj["spec"] = spec
    if specs is not None:
        obj["specs"] = specs
    return obj


def _documented_policies() -> list[tuple[str, dict[str, Any]]]:
    """Every Septum policy in examples/ and in the docs' yaml blocks."""
    found: list[tuple[str, dict[str, Any]]] = []
    texts = [(p, p.read_text()) for p in sorted((ROOT / "examples").rglob("*.yaml"))]
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for block in re.findall(r"```ya?ml\n(.*?)```", doc.read_text(), re.S):
            texts.append((doc, block))
    for path, text in texts:
        for i, obj in enumerate(yaml.safe_load_all(text)):
            if isinstance(obj, dict) and str(obj.get("kind", "")).startswith("Septum"):
                found.append((f"{path.relative_to(ROOT)}#{i}", obj))
    return found


ALL = {"matchLabels": {"k8s:app": "web", "tier": ""}}
EXPRESSIONS = {
    "matchExpressions": [
        {"key": "app", "operator": "In", "values": ["a", "b"]},
        {"key": "k8s:io.kubernetes.pod.namespace", "operator": "NotIn", "values": ["x"]},
        {"key": "canary", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist", "values": []},
    ]
}
PORTS = [
    {"port": "80", "protocol": "TCP"},
    {"port": "8000", "endPort": 8080, "protocol": "UDP"},
    {"port": "0", "protocol": "ANY"},
    {"port": "http-alt"},
    {"port": "65535", "protocol": "SCTP"},
    {"protocol": "TCP"},
]
ICMPS = [
    {"fields": [{"type": 8}, {"type": "EchoReply", "family": "IPv4"}, {"type": "255"}]},
    {"fields": [{"type": "EchoRequest", "family": "IPv6"}, {"type": 135, "family": "IPv6"}]},
]
CIDR_SET = [
    {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12", "10.1.2.3"]},
    {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]},
    {"cidr": "192.0.2.0/24"},
]
HTTP = [
    {"method": "GET", "path": "/v1/.*", "host": "api\\.example\\.com", "headers": ["X-Id"]},
    {"headerMatches": [{"name": "X-Token", "value": "t", "mismatch": "LOG"}]},
    {},
]

VALID: dict[str, dict[str, Any]] = {
    "every ingress field": snp(
        {
            "endpointSelector": ALL,
            "ingress": [
                {
                    "fromEndpoints": [ALL, EXPRESSIONS, {}],
                    "fromCIDR": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/64", "10.1.2.3/24"],
                    "fromCIDRSet": CIDR_SET,
                    "fromEntities": sorted(ENTITIES - {"all"}),
                    "fromNodes": [{"matchLabels": {"kubernetes.io/hostname": "n1"}}],
                    "fromRequires": [],
                    "fromGroups": [],
                    "toPorts": [{"ports": PORTS, "rules": {"http": HTTP}}, {"ports": []}],
                    "icmps": ICMPS,
                    "authentication": {},
                },
                {"fromEntities": ["all"]},
                {},
            ],
            "enableDefaultDeny": {"ingress": True, "egress": False},
            "description": "everything",
            "labels": [{"key": "team", "value": "a", "source": "k8s"}, {"key": "x"}],
        }
    ),
    "every egress field": snp(
        {
            "endpointSelector": EXPRESSIONS,
            "egress": [
                {
                    "toEndpoints": [ALL],
                    "toCIDR": ["0.0.0.0/0", "::/0"],
                    "toCIDRSet": CIDR_SET,
                    "toEntities": ["world", "kube-apiserver"],
                    "toNodes": [{}],
                    "toFQDNs": [{"matchName": "example.com"}, {"matchPattern": "*.example.com"}],
                    "toServices": [],
                    "toRequires": [],
                    "toGroups": [],
                    "toPorts": [
                        {
                            "ports": [{"port": "53", "protocol": "UDP"}],
                            "rules": {
                                "dns": [{"matchName": "example.com."}, {"matchPattern": "*"}],
                                "http": [],
                            },
                        }
                    ],
                    "icmps": ICMPS,
                }
            ],
        }
    ),
    "deny sections": snp(
        {
            "endpointSelector": {},
            "ingressDeny": [
                {"fromCIDRSet": CIDR_SET, "toPorts": [{"ports": PORTS}], "icmps": ICMPS},
                {"fromEntities": ["world"]},
            ],
            "egressDeny": [
                {"toEndpoints": [ALL], "toPorts": [{"ports": [{"port": "443"}]}]},
                {"toFQDNs": [{"matchName": "bad.example"}]},
            ],
        }
    ),
    "specs list": snp(
        specs=[
            {"endpointSelector": ALL, "ingress": [{"fromEndpoints": [{}]}]},
            {"endpointSelector": {}, "egress": [{"toEntities": ["cluster"]}]},
        ]
    ),
    "spec and specs": snp(
        {"endpointSelector": {}, "enableDefaultDeny": {"egress": True}},
        specs=[{"endpointSelector": ALL}],
    ),
    "clusterwide host policy": snp(
        {
            "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}},
            "ingress": [{"fromEntities": ["remote-node", "health"], "toPorts": [{"ports": PORTS}]}],
            "egress": [
                {
                    "toEntities": ["world"],
                    "toPorts": [
                        {"ports": [{"port": "53"}], "rules": {"dns": [{"matchName": "a"}]}}
                    ],
                }
            ],
        },
        clusterwide=True,
    ),
    "clusterwide pods": snp(
        {
            "endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}},
            "ingress": [{"fromEndpoints": [{}], "toPorts": [{"rules": {"http": HTTP}}]}],
        },
        clusterwide=True,
    ),
}


def test_the_valid_policies_cover_every_schema_field() -> None:
    used: set[str] = set()

    def collect(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                collect(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                collect(item, f"{path}[]")
        used.add(path)

    for policy in VALID.values():
        for key in ("spec", "specs"):
            if key in policy:
                collect(policy[key], ".spec" if key == "spec" else ".specs[]")
    never = {
        # Declared only so that a non-empty value is refused with its path (or, for the
        # labels' source and CIDR groups, because Cilium has them).
        "peerRequires[]", "peerGroups[]", "toServices[]", "authentication.mode", "secret",
    }  # fmt: skip
    schema_paths = {p for p, _ in _walk(_schema(True)) if p.startswith(".spec.")}
    unused = {_generic(p) for p in schema_paths} - {_generic(p) for p in used}
    missing = sorted(p for p in unused if not any(n in p for n in never))
    assert missing == [], missing


def _generic(path: str) -> str:
    """A field path with the section and the peer direction left out: `.S[].peerCIDR[]`."""
    path = re.sub(r"\.(ingress|egress)(Deny)?\[\]", ".S[]", path)
    path = re.sub(
        r"\.(from|to)(Endpoints|CIDRSet|CIDR|Entities|Nodes|Requires|Groups)", r".peer\2", path
    )
    path = re.sub(r"\.matchLabels\..*", ".matchLabels{}", path)
    return re.sub(
        r"\.(endpointSelector|nodeSelector|peerEndpoints\[\]|peerNodes\[\])", ".SEL", path
    )


def _cases() -> list[tuple[str, dict[str, Any]]]:
    return list(VALID.items()) + _documented_policies()


@pytest.mark.parametrize(("name", "policy"), _cases(), ids=[n for n, _ in _cases()])
def test_what_the_engine_accepts_the_schema_accepts(name: str, policy: dict[str, Any]) -> None:
    assert engine_errors(policy) == []
    assert schema_errors(policy) == []


def test_the_examples_are_found() -> None:
    assert len(_documented_policies()) >= 2


def _ingress(rule: dict[str, Any], clusterwide: bool = False) -> dict[str, Any]:
    return snp({"endpointSelector": {}, "ingress": [rule]}, clusterwide=clusterwide)


def _egress(rule: dict[str, Any]) -> dict[str, Any]:
    return snp({"endpointSelector": {}, "egress": [rule]})


def _port(port: dict[str, Any]) -> dict[str, Any]:
    return _ingress({"toPorts": [{"ports": [port]}]})


P0 = "spec.ingress[0].toPorts[0].ports[0]"
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "port 70000": (_port({"port": "70000"}), f"{P0}.port"),
    "protocol FOO": (_port({"port": "80", "protocol": "FOO"}), f"{P0}.protocol"),
    "protocol ICMP in toPorts": (_port({"port": "80", "protocol": "ICMP"}), f"{P0}.protocol"),
    "entity bogus": (_ingress({"fromEntities": ["bogus"]}), "spec.ingress[0].fromEntities[0]"),
    "CIDR /33": (_ingress({"fromCIDR": ["10.0.0.0/33"]}), "spec.ingress[0].fromCIDR[0]"),
    "CIDR garbage": (_egress({"toCIDR": ["ten/8"]}), "spec.egress[0].toCIDR[0]"),
    "unknown rule field": (_ingress({"fromEndpoint": [{}]}), "spec.ingress[0].fromEndpoint"),
    "unknown spec field": (snp({"endpointSelector": {}, "ingres": []}), "spec.ingres"),
    "toFQDNs on ingress": (_ingress({"toFQDNs": [{"matchName": "a"}]}), "spec.ingress[0].toFQDNs"),
    "endPort below port": (_port({"port": "90", "endPort": 80}), f"{P0}.endPort"),
    "endPort with a name": (_port({"port": "http", "endPort": 80}), P0),
    "endPort with port 0": (_port({"port": "0", "endPort": 80}), P0),
    "endPort without port": (_port({"endPort": 80}), P0),
    "endPort 70000": (_port({"port": "80", "endPort": 70000}), f"{P0}.endPort"),
    "bad port name": (_port({"port": "-http"}), f"{P0}.port"),
    "port name too long": (_port({"port": "a234567890123456"}), f"{P0}.port"),
    "no subject": (snp({"ingress": []}), "spec.endpointSelector"),
    "no spec": (snp(), ""),
    "both subjects": (
        snp({"endpointSelector": {}, "nodeSelector": {}}, clusterwide=True),
        "spec",
    ),
    "nodeSelector namespaced": (snp({"nodeSelector": {}}), "spec.nodeSelector"),
    "operator bogus": (
        snp({"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
        "spec.endpointSelector.matchExpressions[0].operator",
    ),
    "In without values": (
        snp({"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "spec.endpointSelector.matchExpressions[0]",
    ),
    "Exists with values": (
        snp(
            {
                "endpointSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            }
        ),
        "spec.endpointSelector.matchExpressions[0]",
    ),
    "selector key with a space": (
        _ingress({"fromEndpoints": [{"matchExpressions": [{"key": "a b", "operator": "Exists"}]}]}),
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].key",
    ),
    "CIDR set without cidr": (
        _ingress({"fromCIDRSet": [{"cidrGroupRef": "g"}]}),
        "spec.ingress[0].fromCIDRSet[0].cidr",
    ),
    "icmp type 256": (
        _ingress({"icmps": [{"fields": [{"type": 256}]}]}),
        "spec.ingress[0].icmps[0].fields[0].type",
    ),
    "icmp v6 name in v4": (
        _ingress({"icmps": [{"fields": [{"type": "PacketTooBig"}]}]}),
        "spec.ingress[0].icmps[0].fields[0]",
    ),
    "icmp family": (
        _ingress({"icmps": [{"fields": [{"type": 8, "family": "IPv5"}]}]}),
        "spec.ingress[0].icmps[0].fields[0].family",
    ),
    "L7 in a deny section": (
        snp({"endpointSelector": {}, "ingressDeny": [{"toPorts": [{"rules": {"http": [{}]}}]}]}),
        "spec.ingressDeny[0].toPorts[0].rules",
    ),
    "kafka": (
        _ingress({"toPorts": [{"rules": {"kafka": []}}]}),
        "spec.ingress[0].toPorts[0].rules.kafka",
    ),
    "TLS": (
        _ingress({"toPorts": [{"terminatingTLS": {}}]}),
        "spec.ingress[0].toPorts[0].terminatingTLS",
    ),
    "fromRequires": (_ingress({"fromRequires": [{}]}), "spec.ingress[0].fromRequires"),
    "toServices": (_egress({"toServices": [{}]}), "spec.egress[0].toServices"),
    "toGroups": (_egress({"toGroups": [{}]}), "spec.egress[0].toGroups"),
    "authentication": (
        _ingress({"authentication": {"mode": "required"}}),
        "spec.ingress[0].authentication",
    ),
    "DNS both": (
        _egress({"toPorts": [{"rules": {"dns": [{"matchName": "a", "matchPattern": "*"}]}}]}),
        "spec.egress[0].toPorts[0].rules.dns[0]",
    ),
    "DNS name with a star": (
        _egress({"toPorts": [{"rules": {"dns": [{"matchName": "*.a"}]}}]}),
        "spec.egress[0].toPorts[0].rules.dns[0].matchName",
    ),
    "DNS on ingress": (
        _ingress({"toPorts": [{"rules": {"dns": [{"matchName": "a"}]}}]}),
        "spec.ingress[0].toPorts[0].rules.dns",
    ),
    "FQDN empty": (_egress({"toFQDNs": [{}]}), "spec.egress[0].toFQDNs[0]"),
    "enableDefaultDeny not bool": (
        snp({"endpointSelector": {}, "enableDefaultDeny": {"ingress": "yes"}}),
        "spec.enableDefaultDeny.ingress",
    ),
    "host policy HTTP": (
        snp(
            {"nodeSelector": {}, "ingress": [{"toPorts": [{"rules": {"http": [{}]}}]}]},
            clusterwide=True,
        ),
        "spec",
    ),
    "host policy HTTP on egress only": (
        snp(
            {"nodeSelector": {}, "egress": [{"toPorts": [{"rules": {"http": [{}]}}]}]},
            clusterwide=True,
        ),
        "spec",
    ),
    "specs item": (
        snp(specs=[{"endpointSelector": {}, "egress": [{"toEntities": ["galaxy"]}]}]),
        "specs[0].egress[0].toEntities[0]",
    ),
}


@pytest.mark.parametrize(("policy", "field"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_policies_are_refused_by_both_naming_the_field(
    policy: dict[str, Any], field: str
) -> None:
    engine = engine_errors(policy)
    schema = [path for path, _ in schema_errors(policy)]
    assert engine, "the engine accepted it"
    assert schema, "the schema accepted it"
    # The schema names the field (CEL: where its rule sits, or its fieldPath). The engine names
    # the same field, a field inside it (the one value of an anyOf) or, for a missing
    # required field or a rule on the root, the object holding it.
    assert field in schema, schema
    assert any(_related(e, field) for e in engine), engine


def _related(engine_path: str, field: str) -> bool:
    def inside(inner: str, outer: str) -> bool:
        return not outer or inner == outer or inner.startswith((outer + ".", outer + "["))

    return inside(engine_path, field) or inside(field, engine_path)


# ---- agreement on single fields, generated ----------------------------------------------------

_PORT_TEXT = st.text(alphabet="0123456789abz-", max_size=crdschema.MAX_PORT_TEXT)
_NUMBERS = st.integers(0, 70000).map(str)
_AGREE = settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _agree(policy: dict[str, Any]) -> None:
    engine, schema = engine_errors(policy), schema_errors(policy)
    assert bool(engine) == bool(schema), (engine, schema)


@_AGREE
@given(
    port=st.one_of(_PORT_TEXT, _NUMBERS, st.none()),
    end=st.one_of(st.none(), st.integers(1, 65535)),
    protocol=st.sampled_from([None, "TCP", "UDP", "SCTP", "ANY", "ICMP", "tcp"]),
)
def test_ports_agree(port: str | None, end: int | None, protocol: str | None) -> None:
    item = {"port": port, "endPort": end, "protocol": protocol}
    _agree(_port({k: v for k, v in item.items() if v is not None}))


_OCTET = st.integers(0, 300).map(str)
_V4 = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", _OCTET, _OCTET, _OCTET, _OCTET)
_V6 = st.sampled_from(["2001:db8::", "::", "fe80::1", "2001:db8::g", "1:2:3:4:5:6:7:8", ":::"])
_PREFIX = st.one_of(st.none(), st.integers(0, 140).map(str), st.just(""))


@_AGREE
@given(address=st.one_of(_V4, _V6), prefix=_PREFIX)
def test_cidrs_agree(address: str, prefix: str | None) -> None:
    text = address if prefix is None else f"{address}/{prefix}"
    _agree(_ingress({"fromCIDR": [text]}))


# What only the engine checks: the schema accepts these, the engine refuses them with their path
# (the policy's Valid condition says so). Each is here so that moving it into the schema is seen.
ENGINE_ONLY: dict[str, tuple[dict[str, Any], str]] = {
    "except outside its cidr (CEL cost)": (
        _ingress({"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]}),
        "spec.ingress[0].fromCIDRSet[0].except[0]",
    ),
    "HTTP path not a regular expression": (
        _ingress({"toPorts": [{"rules": {"http": [{"path": "/v1/("}]}}]}),
        "spec.ingress[0].toPorts[0].rules.http[0].path",
    ),
    "matchLabels key with a space (map keys have no schema)": (
        _ingress({"fromEndpoints": [{"matchLabels": {"a b": "c"}}]}),
        "spec.ingress[0].fromEndpoints[0].matchLabels.a b",
    ),
}


@pytest.mark.parametrize(("policy", "field"), ENGINE_ONLY.values(), ids=list(ENGINE_ONLY))
def test_what_only_the_engine_refuses(policy: dict[str, Any], field: str) -> None:
    assert schema_errors(policy) == []
    assert engine_errors(policy) == [field]


@_AGREE
@given(
    icmp_type=st.one_of(
        st.integers(-5, 300),
        st.integers(-5, 300).map(str),
        st.sampled_from(sorted(ICMPV4_TYPES.keys() | ICMPV6_TYPES.keys()) + ["Bogus", ""]),
    ),
    family=st.sampled_from([None, "IPv4", "IPv6"]),
)
def test_icmp_types_agree(icmp_type: int | str, family: str | None) -> None:
    item: dict[str, Any] = {"type": icmp_type}
    if family:
        item["family"] = family
    _agree(_ingress({"icmps": [{"fields": [item]}]}))


@_AGREE
@given(
    entity=st.one_of(st.sampled_from(sorted(ENTITIES)), st.text("abdlorw-", max_size=8)),
    operator=st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in"]),
    values=st.one_of(st.none(), st.lists(st.sampled_from(["a", "b"]), max_size=2)),
)
def test_entities_and_selectors_agree(entity: str, operator: str, values: list[str] | None) -> None:
    expression: dict[str, Any] = {"key": "app", "operator": operator}
    if values is not None:
        expression["values"] = values
    _agree(_ingress({"fromEntities": [entity]}))
    _agree(_ingress({"fromEndpoints": [{"matchExpressions": [expression]}]}))


@_AGREE
@given(
    name=st.one_of(st.none(), st.text("ab.*-_", max_size=6)),
    pattern=st.one_of(st.none(), st.text("ab.*-_", max_size=6)),
)
def test_dns_rules_agree(name: str | None, pattern: str | None) -> None:
    rule = {k: v for k, v in (("matchName", name), ("matchPattern", pattern)) if v is not None}
    _agree(_egress({"toPorts": [{"rules": {"dns": [rule]}}]}))
