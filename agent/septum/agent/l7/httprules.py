"""Cilium's ``rules.http`` as the HTTP proxy enforces them: pure matching, no I/O.

A request is allowed when any rule of the set matches it (an empty rule matches every
request; a set without rules allows nothing).  Within a rule every given field must match:
``method``, ``path`` and ``host`` are RE2 regular expressions matched against the whole value
(anchored at both ends, as Envoy's safe_regex that Cilium's proxy uses: the same engine, so
the same syntax, and linear time whatever a policy author writes); ``headers`` are
``"Name: value"`` (or ``"Name value"``) pairs that must be present with that exact value, or
a bare ``"Name"`` that must be present; ``headerMatches`` name a header and a value, and
without a ``mismatch`` action they must match like ``headers``; with one, a mismatch does
not deny but is acted on when the request is forwarded (LOG: reported; ADD: the value is
added; DELETE: the header is removed; REPLACE: the header is set to the value), as Cilium
does."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import re2

from septum.agent.l7.errors import HttpRuleError

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised, named by field; no stderr line


class Mismatch(enum.Enum):
    """Cilium's HeaderMatch ``mismatch`` actions ("" = the header must match)."""

    NONE = ""
    LOG = "LOG"
    ADD = "ADD"
    DELETE = "DELETE"
    REPLACE = "REPLACE"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    value: str = ""
    mismatch: Mismatch = Mismatch.NONE


@dataclass(frozen=True, slots=True)
class Request:
    """What the rules look at: header names are matched case-insensitively."""

    method: str
    path: str
    host: str
    headers: tuple[tuple[str, str], ...] = ()

    def header_values(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]


@dataclass(frozen=True, slots=True)
class HeaderAction:
    """A change (or a log line) a matched rule's headerMatches asks for."""

    action: Mismatch
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule_index: int = -1  # the first rule that matched, -1 when none did
    actions: tuple[HeaderAction, ...] = ()


def _compile(pattern: str, where: str) -> Any:
    if not pattern:
        return None
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        raise HttpRuleError(f"{where}: invalid regular expression {pattern!r}: {err}") from err


def _header_pair(text: str, where: str) -> tuple[str, str | None]:
    """'X-Foo: bar' / 'X-Foo bar' -> ('X-Foo', 'bar'); 'X-Foo' -> ('X-Foo', None)."""
    text = text.strip()
    if not text:
        raise HttpRuleError(f"{where}: empty header")
    name, _, value = text.partition(" ")
    name = name.rstrip(":")
    if not name:
        raise HttpRuleError(f"{where}: header {text!r} has no name")
    return name, (value.strip() if value else None)


@dataclass(frozen=True)
class HttpRule:
    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()
    header_matches: tuple[HeaderMatch, ...] = ()
    where: str = "http[0]"
    _method: Any = field(init=False, repr=False, compare=False)  # compiled RE2 or None
    _path: Any = field(init=False, repr=False, compare=False)
    _host: Any = field(init=False, repr=False, compare=False)
    _headers: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_method", _compile(self.method, f"{self.where}.method"))
        object.__setattr__(self, "_path", _compile(self.path, f"{self.where}.path"))
        object.__setattr__(self, "_host", _compile(self.host, f"{self.where}.host"))
        object.__setattr__(
            self,
            "_headers",
            tuple(
                _header_pair(h, f"{self.where}.headers[{i}]") for i, h in enumerate(self.headers)
            ),
        )
        for i, hm in enumerate(self.header_matches):
            if not hm.name:
                raise HttpRuleError(f"{self.where}.headerMatches[{i}].name: empty")

    def check(self, request: Request) -> tuple[bool, tuple[HeaderAction, ...]]:
        """(matches, header actions of mismatching headerMatches with an action)."""
        if self._method and not self._method.fullmatch(request.method):
            return False, ()
        if self._path and not self._path.fullmatch(request.path):
            return False, ()
        if self._host and not self._host.fullmatch(request.host):
            return False, ()
        for name, value in self._headers:
            values = request.header_values(name)
            if not values or (value is not None and value not in values):
                return False, ()
        actions: list[HeaderAction] = []
        for hm in self.header_matches:
            if hm.value in request.header_values(hm.name) or (
                not hm.value and request.header_values(hm.name)
            ):
                continue
            if hm.mismatch is Mismatch.NONE:
                return False, ()
            actions.append(HeaderAction(hm.mismatch, hm.name, hm.value))
        return True, tuple(actions)


@dataclass(frozen=True)
class HttpPolicy:
    """The rules of one (endpoint, direction, port, peer identity): any rule allows."""

    rules: tuple[HttpRule, ...]

    def decide(self, request: Request) -> Verdict:
        for i, rule in enumerate(self.rules):
            matched, actions = rule.check(request)
            if matched:
                return Verdict(True, i, actions)
        return Verdict(False)


def policy_from_fields(rules: Sequence[dict[str, object]], where: str = "http") -> HttpPolicy:
    """An HttpPolicy from rules in Cilium's YAML shape (method, path, host, headers,
    headerMatches: [{name, value, mismatch}]); errors name the field."""
    built: list[HttpRule] = []
    for i, raw in enumerate(rules):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise HttpRuleError(f"{at}: expected a mapping")
        unknown = set(raw) - {"method", "path", "host", "headers", "headerMatches"}
        if unknown:
            raise HttpRuleError(f"{at}.{sorted(unknown)[0]}: unknown field")
        matches: list[HeaderMatch] = []
        for j, hm in enumerate(_as_list(raw.get("headerMatches"), f"{at}.headerMatches")):
            hat = f"{at}.headerMatches[{j}]"
            if not isinstance(hm, dict):
                raise HttpRuleError(f"{hat}: expected a mapping")
            if "secret" in hm:
                raise HttpRuleError(f"{hat}.secret: secrets are not supported")
            try:
                mismatch = Mismatch(str(hm.get("mismatch", "")))
            except ValueError as err:
                raise HttpRuleError(
                    f"{hat}.mismatch: {hm.get('mismatch')!r} is not one of "
                    "LOG, ADD, DELETE, REPLACE"
                ) from err
            name, value = str(hm.get("name", "")), str(hm.get("value", ""))
            matches.append(HeaderMatch(name, value, mismatch))
        built.append(
            HttpRule(
                method=_as_str(raw.get("method"), f"{at}.method"),
                path=_as_str(raw.get("path"), f"{at}.path"),
                host=_as_str(raw.get("host"), f"{at}.host"),
                headers=tuple(
                    _as_str(h, f"{at}.headers[{k}]")
                    for k, h in enumerate(_as_list(raw.get("headers"), f"{at}.headers"))
                ),
                header_matches=tuple(matches),
                where=at,
            )
        )
    return HttpPolicy(tuple(built))


class EngineHttpRule(Protocol):
    """The shape of the policy engine's HttpRule (septum.operator.engine.rules), which the
    engine hands over as DirectionVerdict.l7_rules.http."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def headers(self) -> tuple[str, ...]: ...
    @property
    def header_matches(self) -> Sequence[EngineHeaderMatch]: ...


class EngineHeaderMatch(Protocol):
    """The engine's HeaderMatch (mismatch "" or one of Mismatch's values)."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def mismatch(self) -> str: ...


def policy_from_engine(rules: Sequence[EngineHttpRule]) -> HttpPolicy:
    """The HttpPolicy of a redirected connection from the engine's merged L7 rules (an
    empty rule there allows every request, as an L3/L4 allow beside an L7 one does)."""
    return HttpPolicy(
        tuple(
            HttpRule(
                r.method,
                r.path,
                r.host,
                tuple(r.headers),
                tuple(HeaderMatch(m.name, m.value, Mismatch(m.mismatch)) for m in r.header_matches),
                where=f"http[{i}]",
            )  # fmt: skip
            for i, r in enumerate(rules)
        )
    )


def _as_str(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HttpRuleError(f"{where}: expected a string")
    return value


def _as_list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HttpRuleError(f"{where}: expected a list")
    return value
