"""The agent's flow-export flags (Hubble's exporter options) turned into exporter configs.

Hubble's agent takes `--hubble-export-file-path`, `--hubble-export-file-max-size-mb`,
`--hubble-export-file-max-backups`, `--hubble-export-allowlist`, `--hubble-export-denylist`
and `--hubble-export-fieldmask`; Septum's agent takes the same options as
`--flow-export-file …`, `--flow-export-allowlist …`, and adds OTLP logs to a collector
(`--flow-export-otlp-endpoint …`). The lists are Hubble's format: JSON-encoded FlowFilters,
one or several separated by commas, e.g. `{"verdict":["DROPPED"]},{"source_pod":["shop/"]}`.
Pure: strings in, configs out, errors naming the flag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.history.export import ExportConfig
from septum.dataplane.observe.history.otlp import OtlpConfig


class FlowExportFlagError(ValueError):
    """A flow-export flag's value cannot be used; the message names the flag."""


@dataclass(frozen=True)
class FlowExportFlags:
    file: str | None = None
    file_max_size_mb: float = 10.0
    file_max_backups: int = 5
    otlp_endpoint: str | None = None
    otlp_insecure: bool = False
    otlp_ca_file: str | None = None
    otlp_headers: Sequence[str] = ()
    allowlist: str = ""
    denylist: str = ""
    fieldmask: Sequence[str] = ()


def parse_filters(text: str, flag: str) -> list[flow_pb2.FlowFilter]:
    """Hubble's allow/deny list: JSON FlowFilter objects separated by commas (or spaces)."""
    decoder = json.JSONDecoder()
    filters: list[flow_pb2.FlowFilter] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos == len(text):
            return filters
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise FlowExportFlagError(
                f"{flag}: not JSON at character {err.pos}: {err.msg}"
            ) from None
        if not isinstance(value, dict):
            raise FlowExportFlagError(f"{flag}: each filter is a JSON object, got {value!r}")
        try:
            filters.append(json_format.ParseDict(value, flow_pb2.FlowFilter()))
        except json_format.ParseError as err:
            raise FlowExportFlagError(f"{flag}: not a FlowFilter: {err}") from None


def _fieldmask(values: Sequence[str]) -> tuple[str, ...]:
    paths = [p.strip() for value in values for p in value.split(",") if p.strip()]
    return tuple(paths)


def _headers(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    headers = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise FlowExportFlagError(f"--flow-export-otlp-header: {value!r} is not KEY=VALUE")
        headers.append((key.strip(), text))
    return tuple(headers)


def export_configs(flags: FlowExportFlags) -> tuple[ExportConfig | OtlpConfig, ...]:
    """The exporters the flags ask for (none, a file, OTLP, or both)."""
    allow = parse_filters(flags.allowlist, "--flow-export-allowlist")
    deny = parse_filters(flags.denylist, "--flow-export-denylist")
    mask = _fieldmask(flags.fieldmask)
    bad_mask = [p for p in mask if not _names_a_flow_field(p)]
    if bad_mask:
        raise FlowExportFlagError(f"--flow-export-fieldmask: {bad_mask} name no Flow field")
    configs: list[ExportConfig | OtlpConfig] = []
    if flags.file is not None:
        if flags.file_max_size_mb <= 0:
            raise FlowExportFlagError(
                f"--flow-export-file-max-size-mb: {flags.file_max_size_mb} is not positive"
            )
        if flags.file_max_backups < 0:
            raise FlowExportFlagError(
                f"--flow-export-file-max-backups: {flags.file_max_backups} is negative"
            )
        configs.append(
            ExportConfig(
                path=Path(flags.file),
                max_size_mb=flags.file_max_size_mb,
                max_backups=flags.file_max_backups,
                allow=allow,
                deny=deny,
                field_mask=mask,
            )  # fmt: skip
        )
    otlp_only = (flags.otlp_insecure, flags.otlp_ca_file, flags.otlp_headers)
    if flags.otlp_endpoint is None:
        if any(otlp_only):
            raise FlowExportFlagError(
                "--flow-export-otlp-insecure/-ca-file/-header need --flow-export-otlp-endpoint"
            )
    else:
        if flags.otlp_insecure and flags.otlp_ca_file:
            raise FlowExportFlagError(
                "--flow-export-otlp-insecure and --flow-export-otlp-ca-file: choose one"
            )
        try:
            configs.append(
                OtlpConfig(
                    endpoint=flags.otlp_endpoint,
                    insecure=flags.otlp_insecure,
                    ca_file=Path(flags.otlp_ca_file) if flags.otlp_ca_file else None,
                    headers=_headers(flags.otlp_headers),
                    allow=allow,
                    deny=deny,
                    field_mask=mask,
                )  # fmt: skip
            )
        except ValueError as err:
            if isinstance(err, FlowExportFlagError):
                raise
            raise FlowExportFlagError(f"--flow-export-otlp-endpoint: {err}") from None
    if not configs and (allow or deny or mask):
        raise FlowExportFlagError(
            "--flow-export-allowlist/-denylist/-fieldmask need --flow-export-file or "
            "--flow-export-otlp-endpoint"
        )
    return tuple(configs)


def _names_a_flow_field(path: str) -> bool:
    return bool(FieldMask(paths=[path]).IsValidForDescriptor(flow_pb2.Flow.DESCRIPTOR))
