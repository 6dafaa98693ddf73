"""The OpenAPI v3 schemas of the SeptumNetworkPolicy / SeptumClusterwideNetworkPolicy CRDs.

Built from the engine's own vocabulary (entities, protocols, selector operators, ICMP type
names, port bounds), so that `kubectl apply` refuses, with the field named, what the engine
would refuse, and the two cannot drift: `scripts/gen-crds.py` writes `crds/` from here, and
`tests/operator/test_crdschema.py` checks the committed files and the agreement with the engine.

Plain dicts only (no YAML here). What a structural schema can say (types, enums, bounds,
patterns, unknown fields) is said by the schema; cross-field rules are CEL
`x-kubernetes-validations`; what neither can say (regular expressions that must compile,
label keys with whitespace) stays with the engine, which reports it in `.status`.

Every list on the path to a CEL rule has a `maxItems`, and every string a CEL rule reads a
`maxLength`: the API server multiplies a rule's cost by the number of places it can run and
refuses a CRD whose estimated total is over its budget.
"""

from __future__ import annotations

from typing import Any

from septum.operator.engine.parse_septum import ENTITIES
from septum.operator.engine.ports import PORT_MAX, PROTOCOL_NUMBERS
from septum.operator.engine.selectors import Operator
from septum.wellknown.icmp import ICMPV4_TYPES, ICMPV6_TYPES

Schema = dict[str, Any]

GROUP = "septum.io"
VERSION = "v2"
CATEGORY = "septum"

# Bounds on the lists a CEL rule sits under: the API server multiplies a rule's estimated cost
# by how many places it can run, per rule (10M) and per CRD (100M). Lists with no rule under
# them are unbounded, as in Cilium; Cilium's own bounds are 40 `ports` and 40 ICMP `fields`.
MAX_SPECS = 16
MAX_RULES = 64  # per section (ingress, ingressDeny, egress, egressDeny)
MAX_TO_PORTS = 16
MAX_PORTS = 40
MAX_ICMP_FIELDS = 40
MAX_FQDNS = 64
MAX_DNS_RULES = 32
MAX_LABEL_KEY = 317  # the engine's bound (prefix 253 + '/' + name 63)
MAX_CIDR = 64  # the longest IPv6 CIDR is 43 characters
MAX_PORT_TEXT = 15  # an IANA service name is at most 15 characters
MAX_DNS = 255

# Entry protocols a port rule may name; ANY expands to TCP, UDP and SCTP.
PROTOCOLS = [*PROTOCOL_NUMBERS, "ANY"]
OPERATORS = [op.value for op in Operator]
PORT_NUMBER = "0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
NONZERO_PORT = "^0*[1-9][0-9]*$"
# IANA_SVC_NAME: lowercase alphanumerics, single inner '-', at least one letter.
PORT_NAME = "([a-z0-9]+-)*[0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*"
ICMP_TYPE_NUMBER = "0*(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[0-9]{1,2})"
DNS_NAME = "^([-a-zA-Z0-9_.]*[-a-zA-Z0-9_][-a-zA-Z0-9_.]*)?$"
DNS_PATTERN = "^([-a-zA-Z0-9_.*]*[-a-zA-Z0-9_*][-a-zA-Z0-9_.*]*)?$"


def _ipv6() -> str:
    """An IPv6 address in hex groups: eight, or fewer around one '::'."""
    group = "[0-9a-fA-F]{1,4}"
    forms = [f"({group}:){{7}}{group}"]
    for left in range(8):
        right = 7 - left
        head = f"({group}(:{group}){{0,{left - 1}}})?" if left else ""
        tail = f"({group}(:{group}){{0,{right - 1}}})?" if right else ""
        forms.append(f"{head}::{tail}")
    return "(" + "|".join(forms) + ")"


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = f"{_OCTET}(\\.{_OCTET}){{3}}"
IPV6 = _ipv6()
# An address or a prefix (the engine takes a bare address as a /32 or /128); no leading zeros.
CIDR = f"^({IPV4}(/(3[0-2]|[12]?[0-9]))?|{IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"

# metav1.Condition's type: a qualified name (an optional DNS-subdomain prefix and '/').
_CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")
_UNSUPPORTED_PEERS = {
    "Requires": "Deprecated upstream and not supported: must be empty.",
    "Groups": "Cloud provider groups are not supported: must be empty.",
}


def rule(expression: str, message: str, field_path: str | None = None) -> Schema:
    """One CEL validation; `field_path` names the field the error is reported on."""
    out: Schema = {"rule": expression, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def string(max_length: int | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "string"}
    if max_length is not None:
        out["maxLength"] = max_length
    out.update(extra)
    return out


def array(items: Schema, max_items: int | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "array"}
    if max_items is not None:
        out["maxItems"] = max_items
    out["items"] = items
    out.update(extra)
    return out


def obj(properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", **extra, "properties": properties}


def _quoted(names: list[str]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def label_selector(description: str) -> Schema:
    """Kubernetes' LabelSelector; Cilium keys may carry a source prefix (`k8s:app`).

    The operator/values agreement is an `anyOf`, not CEL: selectors sit in every peer list,
    where a rule's cost would be multiplied past the API server's budget.
    """
    expression = obj(
        {
            "key": string(MAX_LABEL_KEY, minLength=1, pattern=r"^\S+$"),
            "operator": string(enum=OPERATORS),
            "values": array(string()),
        },
        required=["key", "operator"],
        description="In and NotIn need at least one value; Exists and DoesNotExist take none.",
        anyOf=[
            {
                "properties": {"operator": {"enum": ["In", "NotIn"]}, "values": {"minItems": 1}},
                "required": ["values"],
            },
            {
                "properties": {
                    "operator": {"enum": ["Exists", "DoesNotExist"]},
                    "values": {"maxItems": 0},
                }
            },
        ],
    )
    return obj(
        {
            "matchLabels": {"type": "object", "additionalProperties": string()},
            "matchExpressions": array(expression),
        },
        description=description,
    )


def _cidr_string(description: str) -> Schema:
    return string(MAX_CIDR, pattern=CIDR, description=description)


def cidr_rule() -> Schema:
    """Cilium's CIDRRule: a CIDR with excepts inside it. CIDR groups are not supported.

    That each except lies inside the cidr is the engine's check: as a CEL rule (the IP
    library's containsCIDR) its estimated cost is five times the API server's per-rule budget.
    """
    return obj(
        {
            "cidr": _cidr_string("The CIDR the rule matches."),
            "except": array(_cidr_string("A CIDR inside `cidr` the rule does not match.")),
        },
        required=["cidr"],
    )


def port_protocol() -> Schema:
    """Cilium's PortProtocol: a port number ("0" = every port) or name, a range, a protocol."""
    return obj(
        {
            "port": string(
                MAX_PORT_TEXT,
                pattern=f"^({PORT_NUMBER}|{PORT_NAME})$",
                description='A port number 0-65535 ("0": every port) or a named container port.',
            ),
            "endPort": {
                "type": "integer",
                "format": "int32",
                "minimum": 1,
                "maximum": PORT_MAX,
                "description": "The last port of a range starting at port (a non-zero number).",
            },
            "protocol": string(
                enum=PROTOCOLS, description="TCP, UDP, SCTP or ANY (the three; the default)."
            ),
        },
        # endPort needs a non-zero numeric port: a schema, so that no rule cost is spent on it.
        anyOf=[
            {"not": {"required": ["endPort"]}},
            {"properties": {"port": {"pattern": NONZERO_PORT}}, "required": ["port"]},
        ],
        **{
            "x-kubernetes-validations": [
                rule(
                    "!has(self.endPort) || !has(self.port) || self.endPort >= int(self.port)",
                    "endPort must not be below port",
                    ".endPort",
                ),
            ]
        },
    )


def http_rule() -> Schema:
    header_match = obj(
        {
            "name": string(),
            "value": string(),
            "mismatch": string(enum=["LOG", "ADD", "DELETE", "REPLACE"]),
            "secret": obj({"namespace": string(), "name": string()}, required=["name"]),
        },
        required=["name"],
    )
    return obj(
        {
            "method": string(description="A regular expression on the request method."),
            "path": string(description="A regular expression on the request path."),
            "host": string(description="A regular expression on the Host header."),
            "headers": array(string(), description="Headers that must be present."),
            "headerMatches": array(header_match),
        }
    )


def dns_rule() -> Schema:
    return obj(
        {
            "matchName": string(MAX_DNS, pattern=DNS_NAME),
            "matchPattern": string(MAX_DNS, pattern=DNS_PATTERN),
        },
        **{
            "x-kubernetes-validations": [
                rule(
                    "(has(self.matchName) && size(self.matchName) > 0)"
                    " != (has(self.matchPattern) && size(self.matchPattern) > 0)",
                    "exactly one of matchName or matchPattern is required",
                )
            ]
        },
    )


def l7_rules(egress: bool) -> Schema:
    """L7 rules of an allow section; DNS rules apply to egress only."""
    if egress:
        dns = array(dns_rule(), MAX_DNS_RULES)
    else:
        dns = array(dns_rule(), 0, description="DNS rules apply to egress only: must be empty.")
    return obj({"http": array(http_rule()), "dns": dns})


def port_rule(allow: bool, egress: bool) -> Schema:
    """Cilium's PortRule; a deny section's port rules carry no L7 rules."""
    properties: dict[str, Schema] = {"ports": array(port_protocol(), MAX_PORTS)}
    if allow:
        properties["rules"] = l7_rules(egress)
    return obj(properties)


def _icmp_types(names: dict[str, int]) -> str:
    return f"^({ICMP_TYPE_NUMBER}|{'|'.join(sorted(names))})$"


def icmp_rule() -> Schema:
    """Cilium's ICMPRule. Which names a type may take depends on the family: an `anyOf`."""
    icmp_field = obj(
        {
            "family": string(enum=["IPv4", "IPv6"], description="IPv4 (the default) or IPv6."),
            "type": {
                "x-kubernetes-int-or-string": True,
                "minimum": 0,
                "maximum": 255,
                "pattern": _icmp_types({**ICMPV4_TYPES, **ICMPV6_TYPES}),
                "description": "An ICMP type number 0-255, or its name in the family "
                "(EchoRequest, ...).",
            },
        },
        required=["type"],
        anyOf=[
            {
                "properties": {
                    "family": {"enum": ["IPv4"]},
                    "type": {"pattern": _icmp_types(ICMPV4_TYPES)},
                }
            },
            {
                "properties": {
                    "family": {"enum": ["IPv6"]},
                    "type": {"pattern": _icmp_types(ICMPV6_TYPES)},
                },
                "required": ["family"],
            },
        ],
    )
    return obj({"fields": array(icmp_field, MAX_ICMP_FIELDS)})


def fqdn_selector() -> Schema:
    return obj(
        {"matchName": string(MAX_DNS), "matchPattern": string(MAX_DNS)},
        **{
            "x-kubernetes-validations": [
                rule(
                    "(has(self.matchName) && size(self.matchName) > 0)"
                    " || (has(self.matchPattern) && size(self.matchPattern) > 0)",
                    "matchName or matchPattern is required",
                )
            ]
        },
    )


def _not_supported(description: str) -> Schema:
    return array({"type": "object"}, 0, description=description)


def section_rule(section: str) -> Schema:
    """One rule of a section: its peers (a union), its ports and ICMP types."""
    egress = section.startswith("egress")
    allow = not section.endswith("Deny")
    pre = "to" if egress else "from"
    properties: dict[str, Schema] = {
        f"{pre}Endpoints": array(label_selector("Pods (endpoints) by label.")),
        f"{pre}CIDR": array(_cidr_string("A CIDR or IP outside the cluster.")),
        f"{pre}CIDRSet": array(cidr_rule()),
        f"{pre}Entities": array(string(enum=sorted(ENTITIES))),
        f"{pre}Nodes": array(label_selector("Nodes by Node label.")),
    }
    for suffix, description in _UNSUPPORTED_PEERS.items():
        properties[pre + suffix] = _not_supported(description)
    if egress:
        properties["toFQDNs"] = array(fqdn_selector(), MAX_FQDNS)
        properties["toServices"] = _not_supported(
            "Not supported yet (select the backends with toEndpoints): must be empty."
        )
    properties["toPorts"] = array(port_rule(allow, egress), MAX_TO_PORTS)
    properties["icmps"] = array(icmp_rule())
    properties["authentication"] = obj(
        {"mode": string(description="Not supported: mutual authentication.")},
        maxProperties=0,
        description="Mutual authentication is not supported: must be empty.",
    )
    return obj(properties)


def _no_http(section: str) -> str:
    return (
        f"(!has(self.{section}) || self.{section}.all(r, !has(r.toPorts) || r.toPorts.all(p,"
        " !has(p.rules) || !has(p.rules.http) || size(p.rules.http) == 0)))"
    )


def rule_spec(clusterwide: bool) -> Schema:
    """Cilium's api.Rule: the subject, four sections, default deny, description, labels."""
    properties: dict[str, Schema] = {
        "endpointSelector": label_selector("The pods the rule applies to."),
    }
    if clusterwide:
        properties["nodeSelector"] = label_selector(
            "The nodes (host endpoints) the rule applies to, instead of endpointSelector."
        )
    for section in _SECTIONS:
        properties[section] = array(section_rule(section), MAX_RULES)
    properties["enableDefaultDeny"] = obj(
        {"ingress": {"type": "boolean"}, "egress": {"type": "boolean"}},
        description="Whether the rule isolates its subject, per direction (default: a "
        "direction with rules is isolated).",
    )
    properties["description"] = string()
    properties["labels"] = array(
        obj({"key": string(), "value": string(), "source": string()}),
    )
    extra: Schema = {}
    if clusterwide:
        extra["x-kubernetes-validations"] = [
            rule(
                "has(self.endpointSelector) != has(self.nodeSelector)",
                "exactly one of endpointSelector or nodeSelector is required",
            ),
            rule(
                f"!has(self.nodeSelector) || {_no_http('ingress')} && {_no_http('egress')}",
                "host policies (nodeSelector) allow no HTTP rules",
            ),
        ]
    else:
        extra["required"] = ["endpointSelector"]
    return obj(properties, **extra)


def condition() -> Schema:
    """metav1.Condition, as every Kubernetes API writes it."""
    return obj(
        {
            "type": string(316, pattern=_CONDITION_TYPE),
            "status": string(enum=["True", "False", "Unknown"]),
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": string(format="date-time"),
            "reason": string(1024, minLength=1, pattern="^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
            "message": string(32768),
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )


def without_cel(schema: Schema) -> Schema:
    """A copy with no CEL rules: for copies of a spec the engine already accepted, whose
    rules would only spend the CRD's cost budget a second time."""
    out: Schema = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            continue
        if key == "properties":
            value = {name: without_cel(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = without_cel(value)
        out[key] = value
    return out


def policy_status(clusterwide: bool) -> Schema:
    node_status = obj(
        {
            "revision": {"type": "integer", "format": "int64", "minimum": 0},
            "enforcing": {"type": "boolean"},
            "lastUpdated": string(format="date-time"),
        }
    )
    conditions = array(
        condition(),
        description="Valid: whether the engine accepted the policy (the message names the "
        "field paths at fault).",
    )
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    last_valid = obj(
        {
            "generation": {"type": "integer", "format": "int64", "minimum": 0},
            "spec": without_cel(rule_spec(clusterwide)),
            "specs": array(without_cel(rule_spec(clusterwide))),
        },
        description="The last version the engine accepted, kept in force while a later "
        "version is invalid (written by the operator).",
    )
    return obj(
        {
            "conditions": conditions,
            "lastValid": last_valid,
            "selectedEndpoints": {
                "type": "integer",
                "minimum": 0,
                "description": "How many endpoints the policy selects.",
            },
            "nodes": {
                "type": "object",
                "description": "Per node: the policy revision its agent enforces.",
                "additionalProperties": node_status,
            },
        }
    )


def policy_schema(clusterwide: bool) -> Schema:
    spec = rule_spec(clusterwide)
    return obj(
        {
            "apiVersion": string(),
            "kind": string(),
            "metadata": {"type": "object"},
            "spec": {**spec, "description": "One rule (Cilium's spec); spec, specs or both."},
            "specs": array(
                rule_spec(clusterwide), MAX_SPECS, description="A list of rules (Cilium's specs)."
            ),
            "status": policy_status(clusterwide),
        },
        required=["metadata"],
        **{
            "x-kubernetes-validations": [
                rule("has(self.spec) || has(self.specs)", "spec or specs is required")
            ]
        },
    )


def policy_crd(clusterwide: bool) -> Schema:
    """The whole CustomResourceDefinition of one of the two policy kinds."""
    kind = "SeptumClusterwideNetworkPolicy" if clusterwide else "SeptumNetworkPolicy"
    plural = "septumclusterwidenetworkpolicies" if clusterwide else "septumnetworkpolicies"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster" if clusterwide else "Namespaced",
            "names": {
                "kind": kind,
                "listKind": kind + "List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": ["sccnp", "scnp"] if clusterwide else ["snp"],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Valid",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
                        },
                        {
                            "name": "Selected",
                            "type": "integer",
                            "description": "Endpoints the policy selects",
                            "jsonPath": ".status.selectedEndpoints",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": policy_schema(clusterwide)},
                }
            ],
        },
    }


POLICY_CRD_FILES = {
    "septum.io_septumnetworkpolicies.yaml": False,
    "septum.io_septumclusterwidenetworkpolicies.yaml": True,
}
