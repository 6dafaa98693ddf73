"""DNS names against Cilium's `matchName` / `matchPattern` (rules.dns and toFQDNs).

Names are compared in their canonical form: lower case, with the trailing dot of a
fully qualified name. A pattern's `*` stands for zero or more characters of one label
(`[-a-z0-9_]`), a leading `**.` for one or more whole labels, and a pattern of stars
alone (`*`, `**.`) for every name. A `matchName` has no stars, so matching it as a
pattern is exact matching; one function serves both fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from septum.operator.engine.rules import DnsRule

_LABEL_CHARS = "[-a-z0-9_]"
# Every name of one or more labels, or the root: the pattern of stars alone.
_ANY_NAME = f"(?:{_LABEL_CHARS}+[.])+|[.]"
# One or more whole labels, each followed by its dot: the `**.` prefix.
_LEADING_LABELS = f"{_LABEL_CHARS}+(?:[.]{_LABEL_CHARS}+)*[.]"


def canonical_name(name: str) -> str:
    """The form names are compared in: trimmed, lower case, one trailing dot."""
    text = name.strip().lower()
    return text if text.endswith(".") else text + "."


def _only_stars(pattern: str) -> bool:
    body = pattern[:-1] if pattern.endswith(".") else pattern
    return bool(body) and set(body) == {"*"}


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The anchored expression a `matchPattern` (or `matchName`) stands for."""
    text = pattern.strip().lower()
    if _only_stars(text):
        return re.compile(f"(?:{_ANY_NAME})\\Z")
    text = canonical_name(text)
    parts: list[str] = []
    stars = len(text) - len(text.lstrip("*"))
    start = 0
    if stars >= 2 and text[stars : stars + 1] == ".":
        parts.append(_LEADING_LABELS)
        start = stars + 1
    index = start
    while index < len(text):
        char = text[index]
        if char == "*":
            while index + 1 < len(text) and text[index + 1] == "*":
                index += 1
            parts.append(f"{_LABEL_CHARS}*")
        elif char == ".":
            parts.append("[.]")
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts) + "\\Z")


def name_matches(pattern: str, name: str) -> bool:
    """Does `name` match a `matchName` or `matchPattern` value (case and final dot aside)?"""
    return pattern_regex(pattern).match(canonical_name(name)) is not None


def dns_rule_matches(rule: DnsRule, name: str) -> bool:
    """One `rules.dns` item: its `matchName` or its `matchPattern` selects the name."""
    if rule.match_name and name_matches(rule.match_name, name):
        return True
    return bool(rule.match_pattern) and name_matches(rule.match_pattern, name)


def dns_allowed(rules: Iterable[DnsRule], name: str) -> bool:
    """A query is allowed when any rule of the port it was sent to selects its name."""
    return any(dns_rule_matches(rule, name) for rule in rules)


def selectors_match(selectors: Iterable[str], names: Iterable[str]) -> bool:
    """toFQDNs: does any selector (a matchName or matchPattern text) select any name?"""
    names = tuple(names)
    return any(name_matches(selector, name) for selector in selectors for name in names)


__all__ = [
    "canonical_name",
    "dns_allowed",
    "dns_rule_matches",
    "name_matches",
    "pattern_regex",
    "selectors_match",
]
