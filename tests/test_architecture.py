"""The layers of docs/architecture.md: what each module may import, no import cycle (function-level imports
included, from the entry points down), Gradio only in the studio, and no module reaching into another's private
names. Static: the package's source is parsed, nothing is imported."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "opd_studio"

LAYERS = {
    "formats": {"files", "records", "trajectory", "targets", "losses", "metrics", "migrations", "token_bytes",
                "hints.inline"},
    "alignment": {"alignment"},
    "engine": {"model", "scoring", "objective", "train", "batching", "rollout", "diagnostics", "teacher_topk",
               "adapters", "fix_rate", "remote", "served", "serve", "resume", "headless", "plots", "tracking",
               "hints", "hints.base", "hints.answer", "hints.arithmetic", "hints.critic", "hints.propose",
               "hints.reference", "hints.tools"},
    "store": {"store", "exports"},
    "workspace": {"workspace", "rounds", "access"},
    "entry": {"", "__main__", "cli", "ui"},  # and every ui.* module
}
MAY_IMPORT = {
    "formats": {"formats"},
    "alignment": {"formats", "alignment"},
    "engine": {"formats", "alignment", "engine"},
    "store": {"formats", "store"},
    "workspace": {"formats", "alignment", "engine", "store", "workspace"},
    "entry": set(LAYERS),
}
STUDIO_GOES_THROUGH_THE_WORKSPACE = {"train", "objective", "adapters", "store", "exports"}
# Private names of other libraries used on purpose: argparse has no public list of a parser's actions.
PRIVATE_ALLOWED = {("cli", "_actions"), ("scoring", "_original"), ("scoring", "_before")}  # scoring: fork's twin


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def parsed() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text())) for p in PACKAGE.rglob("*.py")}


def imports(modules) -> dict[str, set[str]]:
    """module → the package modules it imports anywhere in its source (module level or inside functions)."""
    graph = {}
    for name, (path, tree) in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").startswith("opd_studio"):
                    target = node.module.removeprefix("opd_studio").strip(".")
                else:
                    continue
                for alias in node.names:  # `from . import a, b` imports modules a and b; `from .a import x`, a
                    submodule = f"{target}.{alias.name}".strip(".")
                    found.add(submodule if submodule in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("opd_studio").strip(".") for a in node.names
                          if a.name.startswith("opd_studio")}
        found &= set(modules)
        graph[name] = found - {name}
    return graph


@pytest.fixture(scope="module")
def modules():
    return parsed()


def layer_of(name: str) -> str:
    if name.startswith("ui."):  # every module of the studio is an entry point's
        return "entry"
    for layer, members in LAYERS.items():
        if name in members:
            return layer
    raise AssertionError(f"module {name!r} is in no layer: add it to docs/architecture.md and LAYERS here")


def test_every_import_points_down(modules):
    wrong = []
    for name, deps in imports(modules).items():
        for dep in deps:
            if layer_of(dep) not in MAY_IMPORT[layer_of(name)]:
                wrong.append(f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})")
            if name.startswith("ui") and dep in STUDIO_GOES_THROUGH_THE_WORKSPACE:
                wrong.append(f"{name} imports {dep}: the studio goes through the workspace")
            if dep in {"cli", "__main__"} and name != "__main__":
                wrong.append(f"{name} imports the entry point {dep}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle(modules):
    graph = imports(modules)
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for entry in ("__main__", "cli", "ui.app", "ui", *sorted(graph)):
        if entry not in state:
            visit(entry, [entry])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_only_the_studio_imports_gradio(modules):
    outside = [name for name, (_, tree) in modules.items() if not name.startswith("ui")
               for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               and any(n == "gradio" or n.startswith("gradio.")
                       for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]))]
    assert not outside, f"the engine must import without Gradio: {sorted(set(outside))}"


def test_no_module_reaches_into_another_modules_private_names(modules):
    reached = []
    for name, (_, tree) in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                        and (name, node.attr) not in PRIVATE_ALLOWED:
                    reached.append(f"{name}: .{node.attr} (line {node.lineno})")
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("opd_studio")):
                reached += [f"{name}: imports {a.name} (line {node.lineno})" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not reached, "\n".join(reached)
