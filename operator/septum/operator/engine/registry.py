"""Numeric rule ids: what each entry's `rule_id` means, for explanations.

Ids are handed out on first use and stay fixed for the life of the registry,
so the same rule keeps its id across recompiles.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from septum.operator.engine.rules import Action, Direction, PolicyKey, RuleRef, Tier


class Origin(enum.Enum):
    RULE = "rule"  # a policy rule matched
    DEFAULT_DENY = "default-deny"  # selected and isolated, nothing allowed it
    NO_POLICY = "no-policy"  # nothing isolates the endpoint in this direction


@dataclass(frozen=True, slots=True)
class RuleInfo:
    origin: Origin
    direction: Direction
    ref: RuleRef | None = None
    tier: Tier | None = None
    action: Action | None = None
    isolated_by: tuple[PolicyKey, ...] = ()
    peer_text: str = ""
    # Its denies only report (verdict AUDIT): the rule's policy is in audit mode, or (a
    # default deny) every policy isolating the endpoint is.
    audit: bool = False

    def describe(self, endpoint_role: str) -> str:
        where = "destination" if self.direction is Direction.INGRESS else "source"
        if self.origin is Origin.NO_POLICY:
            return f"no policy selects the {where} in this direction ({self.direction.value})"
        if self.origin is Origin.DEFAULT_DENY:
            names = ", ".join(str(p) for p in self.isolated_by)
            verb = "selects" if len(self.isolated_by) == 1 else "select"
            direction = self.direction.value
            audited = " (audit mode)" if self.audit else ""
            return (
                f"default deny: {names} {verb} the {where} for {direction} and no rule allows this"
                f"{audited}"
            )
        assert self.ref is not None and self.tier is not None and self.action is not None
        tier = {Tier.ADMIN: "admin", Tier.NORMAL: "policy", Tier.BASELINE: "baseline"}[self.tier]
        audited = " (audit mode)" if self.audit else ""
        return f"{self.action.value} by {tier} tier: {self.ref}{audited}"


class RuleRegistry:
    """Rule ids; the audit mode is part of a rule's key, so turning a policy's audit mode on
    or off gives its rules new ids (and memoised compiles stay correct)."""

    def __init__(self) -> None:
        self._ids: dict[object, int] = {}
        self._infos: list[RuleInfo] = [RuleInfo(Origin.NO_POLICY, Direction.INGRESS)]  # id 0 unused
        self.audited: set[int] = set()  # ids whose denies only report (never shrinks)

    def _intern(self, key: object, info: RuleInfo) -> int:
        number = self._ids.get(key)
        if number is None:
            number = len(self._infos)
            self._ids[key] = number
            self._infos.append(info)
            if info.audit:
                self.audited.add(number)
        return number

    def rule(
        self,
        ref: RuleRef,
        direction: Direction,
        tier: Tier,
        action: Action,
        peer_text: str,
        audit: bool = False,
    ) -> int:
        return self._intern(
            ("rule", ref, direction, tier, action, audit),
            RuleInfo(Origin.RULE, direction, ref, tier, action, peer_text=peer_text, audit=audit),
        )

    def default_deny(
        self, direction: Direction, isolated_by: tuple[PolicyKey, ...], audit: bool = False
    ) -> int:
        return self._intern(
            ("deny", direction, isolated_by, audit),
            RuleInfo(Origin.DEFAULT_DENY, direction, isolated_by=isolated_by, audit=audit),
        )

    def no_policy(self, direction: Direction) -> int:
        return self._intern(("none", direction), RuleInfo(Origin.NO_POLICY, direction))

    def info(self, rule_id: int) -> RuleInfo:
        return self._infos[rule_id]

    def __len__(self) -> int:
        return len(self._infos) - 1
