"""The house rules `make lint` checks that ruff, mypy and import-linter don't:

- no import cycle between first-party modules through module-level imports;
- no first-party module over 600 lines (migrations and the simulator aside);
- function-local first-party imports at most 10% of all first-party imports, each with a
  comment naming the cycle it avoids (on its line, or just above it or its group of imports).

Prints the figures; exits 1 on a breach.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("agent", "api", "churnsite", "crm_sim", "desk", "ml", "retention")
MAX_LINES = 600
LONG_ALLOWED = {"ml/sim/simulator.py"}  # the simulated world: one model, read top to bottom
MAX_LOCAL_SHARE = 0.10


def modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The first-party module an import names (a name imported from a package may be a module)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imports(path: Path) -> list[tuple[ast.stmt, list[str], bool]]:
    """(node, imported dotted names, is_local) for each import statement."""
    tree = ast.parse(path.read_text(), filename=str(path))
    local_nodes = {
        id(inner)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(fn)
        if isinstance(inner, ast.Import | ast.ImportFrom)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.append((node, names, id(node) in local_nodes))
    return out


def names_its_cycle(lines: list[str], lineno: int) -> bool:
    """Does the import's own line, or the comment just above it, name a cycle? The comment may
    head a group of imports (read upwards through comment and import lines)."""
    if "cycle" in lines[lineno - 1].lower():
        return True
    for line in reversed(lines[: lineno - 1]):
        text = line.strip()
        if text.startswith("#"):
            if "cycle" in text.lower():
                return True
        elif not text.startswith(("from ", "import ")):
            return False
    return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    problems: list[str] = []
    total = local = 0
    sizes = {}
    for name, path in known.items():
        lines = path.read_text().splitlines()
        rel = str(path.relative_to(ROOT))
        sizes[rel] = len(lines)
        if len(lines) > MAX_LINES and rel not in LONG_ALLOWED:
            problems.append(f"{rel}: {len(lines)} lines (more than {MAX_LINES})")
        for node, names, is_local in imports(path):
            targets = {t for n in names if (t := resolve(n, known)) is not None and t != name}
            # A package's __init__ importing its own submodule is not a dependency on others.
            if not targets:
                continue
            total += 1
            if is_local:
                local += 1
                if not names_its_cycle(lines, node.lineno):
                    problems.append(
                        f"{rel}:{node.lineno}: function-local import without a comment naming its cycle"
                    )
            else:
                graph[name] |= targets
    for component in cycles(graph):
        problems.append("module-level import cycle: " + " -> ".join(component))
    share = local / total if total else 0.0
    if share > MAX_LOCAL_SHARE:
        problems.append(f"function-local first-party imports {share:.1%} (more than {MAX_LOCAL_SHARE:.0%})")
    largest = max(sizes, key=lambda k: sizes[k] if k not in LONG_ALLOWED else 0)
    print(
        f"check_modules: {len(known)} modules, first-party imports {total}, function-local {local} "
        f"({share:.1%}), largest {largest} ({sizes[largest]} lines)"
    )
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
