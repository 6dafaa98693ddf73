"""Septum's own import-linter contract type: an allow-list of what a package may import.

import-linter's built-in `forbidden` contract is a block-list: the pure policy engine was kept
pure by naming five packages it must not import, so a sixth (say `requests`) would have slipped
through. `allowed_imports` turns that around: every module in `source_modules` may import only
the standard library, itself and the modules listed in `allowed_modules` (each with its
descendants). Registered in pyproject.toml under `[tool.importlinter] contract_types`; lint-imports
runs from the repository root, which puts this folder's parent on `sys.path`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import grimp
from importlinter import Contract, ContractCheck, fields, output


@dataclass(frozen=True)
class IllegalImport:
    importer: str
    imported: str
    line_numbers: tuple[int, ...]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class AllowedImportsContract(Contract):
    """Modules under `source_modules` import only the standard library, themselves and
    `allowed_modules`.

    Configuration options:
        - source_modules:  the packages held to the allow-list (with their descendants).
        - allowed_modules: the other packages (first-party or third-party) they may import.
        - denied_stdlib:   standard-library modules that are still refused (`ctypes` for
                           the pure engine: the standard library also reaches the kernel).
    """

    type_name = "allowed_imports"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField(), required=False)
    denied_stdlib = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        sources: list[str] = list(self.source_modules)  # type: ignore[call-overload]
        allowed: list[str] = list(self.allowed_modules or [])  # type: ignore[call-overload]
        denied: list[str] = list(self.denied_stdlib or [])  # type: ignore[call-overload]
        illegal: list[IllegalImport] = []
        for source in sources:
            if source not in graph.modules:
                raise ValueError(f"allowed_imports: source module {source!r} is not in the graph")
            for importer in sorted({source} | graph.find_descendants(source)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    if self._is_allowed(imported, sources + allowed, denied):
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = tuple(detail["line_number"] for detail in details)
                    illegal.append(IllegalImport(importer, imported, lines))
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    @staticmethod
    def _is_allowed(imported: str, packages: list[str], denied: list[str]) -> bool:
        top = imported.split(".")[0]
        if top in sys.stdlib_module_names:
            return top not in denied
        return any(_within(imported, package) for package in packages)

    def render_broken_contract(self, check: ContractCheck) -> None:
        for link in check.metadata["illegal"]:
            lines = ", ".join(map(str, link.line_numbers))
            output.print_error(
                f"- {link.importer} -> {link.imported} (l.{lines}): "
                "not allowed (the standard library less denied_stdlib, and allowed_modules)",
                bold=False,
            )
            output.new_line()


class OneBridgeContract(Contract):
    """Inside `container`, only `bridge` imports both `side_a` and `side_b` directly.

    The agent joins the policy engine and the datapath: its other modules may use one side
    each (the watcher the engine, the endpoint manager the datapath), but translating between
    their entry types happens in one module, so the two models meet in one place.

    Configuration options:
        - container: the package whose modules are checked (with its descendants).
        - side_a, side_b: the two packages (with their descendants).
        - bridge: the one module allowed to import both.
    """

    type_name = "one_bridge"

    container = fields.StringField()
    side_a = fields.StringField()
    side_b = fields.StringField()
    bridge = fields.StringField()

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        container = str(self.container)
        side_a, side_b, bridge = str(self.side_a), str(self.side_b), str(self.bridge)
        if container not in graph.modules:
            raise ValueError(f"one_bridge: container {container!r} is not in the graph")
        offenders: list[tuple[str, list[str], list[str]]] = []
        for module in sorted({container} | graph.find_descendants(container)):
            if module == bridge:
                continue
            imported = graph.find_modules_directly_imported_by(module)
            from_a = sorted(name for name in imported if _within(name, side_a))
            from_b = sorted(name for name in imported if _within(name, side_b))
            if from_a and from_b:
                offenders.append((module, from_a, from_b))
        return ContractCheck(kept=not offenders, metadata={"offenders": offenders})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, from_a, from_b in check.metadata["offenders"]:
            output.print_error(
                f"- {module} imports both {', '.join(from_a)} and {', '.join(from_b)}: "
                f"only {self.bridge} may",
                bold=False,
            )
            output.new_line()
