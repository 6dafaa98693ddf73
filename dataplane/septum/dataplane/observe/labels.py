"""Kubernetes-style label selectors over Hubble's "source:key=value" labels.

Hubble's `--label` filters are Kubernetes label selectors whose keys may name
the label's source (`k8s:app=web`); a key without a source matches any source.
Supported terms, comma-separated and all required: `key`, `!key`,
`key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from septum.dataplane.observe.errors import LabelSelectorError as LabelSelectorError

LabelPredicate = Callable[[Mapping[str, str]], bool]
ANY_SOURCE = "any"


_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=,()]+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_CMP_TERM = re.compile(r"^\s*(?P<key>[^\s!=,()]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=,()]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=,()]+)\s*$")


def label_map(labels: Iterable[str]) -> dict[str, str]:
    """`["k8s:app=web"]` -> `{"k8s.app": "web", "any.app": "web"}`."""
    out: dict[str, str] = {}
    for label in labels:
        key, _, value = label.partition("=")
        source, sep, name = key.partition(":")
        if not sep:
            source, name = ANY_SOURCE, key
        out[f"{source}.{name}"] = value
        out.setdefault(f"{ANY_SOURCE}.{name}", value)
    return out


def _normalise_key(key: str) -> str:
    source, sep, name = key.partition(":")
    return f"{source}.{name}" if sep else f"{ANY_SOURCE}.{key}"


def _split_terms(selector: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    if depth != 0:
        raise LabelSelectorError(f"label selector {selector!r}: unbalanced parentheses")
    return terms


def _term(text: str, selector: str) -> LabelPredicate:
    if match := _SET_TERM.match(text):
        key = _normalise_key(match["key"])
        values = frozenset(v.strip() for v in match["values"].split(","))
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _CMP_TERM.match(text):
        key, value = _normalise_key(match["key"]), match["value"]
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_TERM.match(text):
        key = _normalise_key(match["key"])
        if match["neg"]:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise LabelSelectorError(f"label selector {selector!r}: cannot parse term {text.strip()!r}")


def parse_selector(selector: str) -> LabelPredicate:
    """Compile one selector; every term must hold."""
    if not selector.strip():
        raise LabelSelectorError("label selector must not be empty")
    terms = [_term(text, selector) for text in _split_terms(selector)]
    return lambda labels: all(term(labels) for term in terms)
