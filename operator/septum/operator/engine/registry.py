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

    def describe(self, endpoint_role: str) -> str:
        where = "destination" if self.direction is Direction.INGRESS else "source"
        if self.origin is Origin.NO_POLICY:
            return f"no policy selects the {where} in this direction ({self.direction.value})"
        if self.origin is Origin.DEFAULT_DENY:
            names = ", ".join(str(p) for p in self.isolated_by)
            verb = "selects" if len(self.isolated_by) == 1 else "select"
            direction = self.direction.value
            return (
                f"default deny: {names} {verb} the {where} for {direction} and no rule allows this"
            )
        assert self.ref is not None and self.tier is not None and self.action is not None
        tier = {Tier.ADMIN: "admin", Tier.NORMAL: "policy", Tier.BASELINE: "baseline"}[self.tier]
        return f"{self.action.value} by {tier} tier: {self.ref}"


class RuleRegistry:
    def __init__(self) -> None:
        self._ids: dict[object, int] = {}
        self._infos: list[RuleInfo] = [RuleInfo(Origin.NO_POLICY, Direction.INGRESS)]  # id 0 unused

    def _intern(self, key: object, info: RuleInfo) -> int:
        number = self._ids.get(key)
        if number is None:
            number = len(self._infos)
            self._ids[key] = number
            self._infos.append(info)
        return number

    def rule(
        self, ref: RuleRef, direction: Direction, tier: Tier, action: Action, peer_text: str
    ) -> int:
        return self._intern(
            ("rule", ref, direction, tier, action),
            RuleInfo(Origin.RULE, direction, ref, tier, action, peer_text=peer_text),
        )

    def default_deny(self, direction: Direction, isolated_by: tuple[PolicyKey, ...]) -> int:
        return self._intern(
            ("deny", direction, isolated_by),
            RuleInfo(Origin.DEFAULT_DENY, direction, isolated_by=isolated_by),
        )

    def no_policy(self, direction: Direction) -> int:
        return self._intern(("none", direction), RuleInfo(Origin.NO_POLICY, direction))

    def info(self, rule_id: int) -> RuleInfo:
        return self._infos[rule_id]

    def __len__(self) -> int:
        return len(self._infos) - 1
