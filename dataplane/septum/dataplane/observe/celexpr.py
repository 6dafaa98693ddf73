"""Hubble's experimental CEL flow filter, evaluated with cel-python (celpy).

Hubble binds the flow as `_flow` (a `flow.Flow` message) in an environment whose
container is the `flow` package, so `Verdict.DROPPED` and `flow.Verdict.DROPPED`
name enum values, and it requires every expression to be boolean. celpy has no
protobuf type checker, so Septum gives it the flow as CEL values: each message
becomes a map holding every declared field (unset ones with their default, as
protobuf field selection reads them) and remembering which fields are set, so
that `has(_flow.l7)` is presence as in cel-go rather than "the key exists".

What cel-go's checker refuses at compile time (an unknown field or name, a
non-boolean result) Septum finds by running the expression once on an empty
flow; a mistake behind a short-circuit that the empty flow never reaches is
found only at run time, where, as in Hubble, an evaluation error means "no
match".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Evaluator
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.errors import CelError as CelError

FLOW_VARIABLE = "_flow"  # Hubble's name: "flow" is taken by the package


class _Message(celtypes.MapType):
    """A protobuf message as CEL sees it: every declared field, and which are set.

    Fields are converted when an expression first reads them (most read two or
    three of a flow's forty); whole-map operations convert them all first.
    """

    def __init__(self, message: Message) -> None:
        super().__init__()
        self._message = message
        self._fields: Mapping[str, Any] = message.DESCRIPTOR.fields_by_name
        self.present = frozenset(field.name for field, _ in message.ListFields())

    def __missing__(self, key: object) -> Any:
        field = self._fields.get(str(key)) if isinstance(key, str) else None
        if field is None:
            raise KeyError(key)
        value = _field_value(field, getattr(self._message, field.name), field.name in self.present)
        self[celtypes.StringType(field.name)] = value
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._fields

    def _materialize(self) -> None:
        for name in self._fields:
            self.__getitem__(celtypes.StringType(name))

    def __iter__(self) -> Iterator[Any]:
        self._materialize()
        return super().__iter__()

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        self._materialize()
        if isinstance(other, _Message):
            other._materialize()
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # a mutable mapping, as dict


_INT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_ENUM,  # CEL reads enum fields as their numbers
}
_UINT_TYPES = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}
_DOUBLE_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
# google.protobuf wrappers read as their value, or null when unset.
_WRAPPERS = {
    "google.protobuf.BoolValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind in _INT_TYPES:
        return celtypes.IntType(value)
    if kind in _UINT_TYPES:
        return celtypes.UintType(value)
    if kind == FieldDescriptor.TYPE_BOOL:
        return celtypes.BoolType(value)
    if kind in _DOUBLE_TYPES:
        return celtypes.DoubleType(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return celtypes.BytesType(value)
    return celtypes.StringType(value)


def _single(field: FieldDescriptor, value: Any, is_set: bool) -> Any:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar(field, value)
    message_type = field.message_type
    assert message_type is not None  # a TYPE_MESSAGE field always has one
    name = message_type.full_name
    if name == "google.protobuf.Timestamp":
        return celtypes.TimestampType(value.ToDatetime(tzinfo=UTC))
    if name == "google.protobuf.Duration":
        return celtypes.DurationType(value.ToTimedelta())
    if name in _WRAPPERS:
        return _scalar(message_type.fields_by_name["value"], value.value) if is_set else None
    return _Message(value)


def _field_value(field: FieldDescriptor, value: Any, is_set: bool) -> Any:
    if field.is_repeated:
        return celtypes.ListType([_single(field, item, True) for item in value])
    return _single(field, value, is_set)


def message_value(message: Message) -> celtypes.MapType:
    """`message` as a CEL value (see the module docstring)."""
    return _Message(message)


def _enum_values(enum: EnumDescriptor) -> celtypes.MapType:
    return celtypes.MapType(
        {celtypes.StringType(v.name): celtypes.IntType(v.number) for v in enum.values}
    )


def _enum_names(package: Any) -> dict[str, celtypes.MapType]:
    descriptor = package.DESCRIPTOR
    return {name: _enum_values(enum) for name, enum in descriptor.enum_types_by_name.items()}


# `Verdict.DROPPED` and `flow.Verdict.DROPPED` resolve as in Hubble's `flow` container.
_ENUMS = _enum_names(flow_pb2)
_CONSTANTS: dict[str, Any] = {
    **_ENUMS,
    "flow": celtypes.MapType({celtypes.StringType(k): v for k, v in _ENUMS.items()}),
}


def _member_dot(tree: lark.Tree[Any]) -> lark.Tree[Any] | None:
    """The `e.f` node under has()'s argument, if the argument is one."""
    node = tree
    while isinstance(node, lark.Tree):
        if node.data == "member_dot":
            return node
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return None


class _FlowEvaluator(Evaluator):
    def macro_has_eval(self, exprlist: lark.Tree[Any]) -> celtypes.BoolType:
        # celpy's has() asks "does e.f evaluate", which every declared field of
        # a _Message does; CEL on protobuf asks whether the field is set.
        node = _member_dot(exprlist)
        if node is not None:
            container = self.visit(node.children[0])
            name = str(node.children[1])
            if isinstance(container, _Message) and celtypes.StringType(name) in container:
                return celtypes.BoolType(name in container.present)
        return super().macro_has_eval(exprlist)


class _FlowRunner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _FlowEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


_ENVIRONMENT = celpy.Environment(runner_class=_FlowRunner)


def _run(program: celpy.Runner, flow: celtypes.MapType) -> Any:
    """The expression's value, or the CELEvalError it produced."""
    try:
        return program.evaluate({FLOW_VARIABLE: flow, **_CONSTANTS})
    except CELEvalError as err:
        return err


def _reason(err: CELEvalError) -> str:
    message = str(err.args[0]) if err.args else str(err)
    # celpy appends the whole activation to "undeclared reference" errors and
    # names grammar rules and Python classes where cel-go names operators and types.
    message = message.split(" (in activation", 1)[0]
    message = re.sub(r"Token\('RULE', '(\w+)'\)", r"'\1'", message)
    return re.sub(r"<class 'celpy\.celtypes\.(\w+?)(?:Type)?'>", lambda m: m[1].lower(), message)


def _is_static_error(err: CELEvalError) -> bool:
    """Whether cel-go's checker would have refused this before any flow was seen."""
    kind = err.args[1] if len(err.args) > 1 else None
    if kind is KeyError:  # unknown variable, field or function
        return True
    # Flow fields have fixed types, so an operator without an overload for
    # them (uint == int, string + int) is a type error, not a data error.
    return kind is TypeError and str(err.args[0]).startswith("found no matching overload")


def _cel_type_name(value: Any) -> str:
    for base in type(value).__mro__:
        if base.__module__ == celtypes.__name__ and base.__name__ != "_Message":
            return base.__name__.removesuffix("Type").lower()
    return type(value).__name__


def compile_expression(expression: str) -> celpy.Runner:
    """A program for `expression`; CelError when Hubble would refuse it."""
    try:
        program = _ENVIRONMENT.program(_ENVIRONMENT.compile(expression))
    except CELParseError as err:
        raise CelError(f"syntax error: {' '.join(str(err).split())}") from err
    result = _run(program, message_value(flow_pb2.Flow()))
    if isinstance(result, CELEvalError):
        # Anything else (an index past an empty list, ...) depends on the flow.
        if _is_static_error(result):
            raise CelError(_reason(result))
    elif not isinstance(result, celtypes.BoolType):
        raise CelError(f"got {_cel_type_name(result)}, wanted bool result type")
    return program


def cel_filter(programs: Sequence[celpy.Runner]) -> Callable[[flow_pb2.Flow], bool]:
    """Matches a flow when any program is true for it; errors count as false (as in Hubble)."""

    def match(flow: flow_pb2.Flow) -> bool:
        value = message_value(flow)
        for program in programs:
            try:
                result = _run(program, value)
            except Exception:  # noqa: BLE001 - a user's expression must never break a stream
                continue
            if isinstance(result, celtypes.BoolType) and result:
                return True
        return False

    return match
