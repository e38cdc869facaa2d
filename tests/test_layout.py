"""The package's shape (issue 12): no import cycles, ``pipeline`` and ``train`` never import each
other, nobody imports another module's private name, and the public API resolves."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "peanut_jax"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path, top_level_only: bool):
    """(imported module, imported names, line) for every peanut_jax import of a module."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under `if TYPE_CHECKING:`-free module level, incl. try/if blocks
        nodes = [
            n
            for stmt in tree.body
            for n in ast.walk(stmt)
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("peanut_jax"):
                    yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.startswith("peanut_jax"):
                yield mod, [a.name for a in node.names], node.lineno


def _targets(mod: str, names: list[str]) -> list[str]:
    """The peanut_jax modules an import statement executes (a `from pkg import sub` imports pkg.sub)."""
    subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
    # `from pkg import sub` needs only pkg.sub once pkg is in sys.modules; any other name needs pkg itself
    needs_pkg = mod in MODULES and (not names or len(subs) < len(names))
    return ([mod] if needs_pkg else []) + subs


def test_no_import_cycles_at_module_level():
    graph = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for mod, names, _ in _imports(name, path, top_level_only=True):
            for t in _targets(mod, names):
                if t != name:
                    graph[name].add(t)
    # packages import their parents implicitly; a cycle through a parent __init__ is a real cycle too
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m) :] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "a, b",
    [
        ("peanut_jax.pipeline", "peanut_jax.train"),
        ("peanut_jax.train", "peanut_jax.pipeline"),
        ("peanut_jax.checkpoints", "peanut_jax.pipeline"),
        ("peanut_jax.checkpoints", "peanut_jax.train"),
        ("peanut_jax.evaluate", "peanut_jax.train"),
        ("peanut_jax.models", "peanut_jax.checkpoints"),
        ("peanut_jax.convert", "peanut_jax.checkpoints"),
    ],
)
def test_layers_do_not_import_each_other(a, b):
    bad = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {mod}"
        for name, path in MODULES.items()
        if name == a or name.startswith(a + ".")
        for mod, _, line in _imports(name, path, top_level_only=False)
        if mod == b or mod.startswith(b + ".")
    ]
    assert not bad, "\n".join(bad)


def test_nobody_imports_a_private_name_of_another_module():
    bad = []
    for name, path in MODULES.items():
        for mod, names, line in _imports(name, path, top_level_only=False):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {n} from {mod}")
    assert not bad, "\n".join(bad)


def test_public_api_resolves():
    import peanut_jax as pj
    from peanut_jax import pipeline

    for mod in (pj, pipeline):
        for name in mod.__all__:
            assert getattr(mod, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        pj.lod  # noqa: B018
    module, variables = pj.load("interpolate_demo")
    assert type(module).__name__ == type(pj.build("rife")).__name__ and "params" in variables
