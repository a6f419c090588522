"""fastnn's modules import each other without a circle, and every import of a fastnn module
inside a function is there for a reason.

The imports are read from the sources with ``ast`` (nothing is imported): each ``import`` and
``from ... import`` of a fastnn module, at module level (run when the module is imported) or
inside a function (run when it is called). Imports under ``if TYPE_CHECKING:`` are for the type
checker only and are left out. Importing ``fastnn.a.b`` runs the package ``fastnn.a`` first, so
it counts as an import of both (packages that contain the importing module are already running).

1. The graph of all these imports has no cycle. The function-level imports listed in
   ``DEFERRED`` are left out of it (each with its reason).
2. A function-level import that is not in ``DEFERRED`` and would close no cycle at module level
   belongs at module level.
3. Every entry of ``DEFERRED`` is still a function-level import in the sources.
"""
import ast
import os

import fastnn

PACKAGE_DIR = os.path.dirname(os.path.abspath(fastnn.__file__))

# (importer, imported) -> why the import stays inside a function. "pending": an import that
# another change of the same refactoring moves to module level or removes.
DEFERRED = {
    ("fastnn", "fastnn.sklearn"):
        "scikit-learn is an optional dependency: the estimators load on first use",
    ("fastnn.io", "fastnn"):
        "fastnn.__version__ is set in fastnn/__init__.py, which imports fastnn.io",
    ("fastnn.model", "fastnn.training"):
        "fastnn.training runs fit on the training engine, whose compiler reads "
        "fastnn.model.Sequential: Sequential.fit/evaluate call into training at run time",
    ("fastnn.graph", "fastnn.training"):
        "fastnn.training runs fit on the training engine, whose compiler reads "
        "fastnn.graph.Model: Model.fit calls into training at run time",
}


def _modules():
    """{dotted name: (path or None for a compiled module, is a package)}."""
    found = {}
    parent = os.path.dirname(PACKAGE_DIR)
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        rel = os.path.relpath(root, parent).replace(os.sep, ".")
        for f in files:
            stem, ext = f.split(".", 1)[0], os.path.splitext(f)[1]
            if ext == ".py":
                if stem == "__init__":
                    found[rel] = (os.path.join(root, f), True)
                else:
                    found[f"{rel}.{stem}"] = (os.path.join(root, f), False)
            elif ext in (".pyx", ".so", ".pyd") and f"{rel}.{stem}" not in found:
                found[f"{rel}.{stem}"] = (None, False)   # compiled: imports no fastnn module
    return found


MODULES = _modules()


def _is_type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(module, is_package, node):
    """The fastnn modules an import statement runs, as (module, the module it names) pairs."""
    names = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
            names += [next((p for p in prefixes if p in MODULES), None)]
    else:
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[:len(base) - node.level + 1]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in MODULES else base if base in MODULES else None)
    out = []
    for name in names:
        if name is None or not (name == "fastnn" or name.startswith("fastnn.")):
            continue
        parts = name.split(".")
        for i in range(1, len(parts)):      # the packages it runs first
            pkg = ".".join(parts[:i])
            if not (module == pkg or module.startswith(pkg + ".")):
                out.append((pkg, name))
        out.append((name, name))
    return out


def _imports():
    """[(importer, imported, line, "module" or "function", the module the statement names)]
    for every fastnn module (importing ``fastnn.a.b`` imports ``fastnn.a`` too)."""
    edges = []
    for module, (path, is_package) in sorted(MODULES.items()):
        if path is None:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)

        def visit(node, in_function):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.orelse:
                    visit(child, in_function)
                return
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, named in _targets(module, is_package, node):
                    edge = (module, target, node.lineno, "function" if in_function else "module",
                            named)
                    if target != module and edge not in edges:
                        edges.append(edge)
                return
            inner = in_function or isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)

        visit(tree, False)
    return edges


EDGES = _imports()


def _graph(edges):
    graph = {}
    for src, dst, line, *_ in edges:
        graph.setdefault(src, {}).setdefault(dst, line)
    return graph


def _path(graph, start, goal):
    """A path start -> ... -> goal in graph, or None."""
    seen, stack = {start}, [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, {})):
            if nxt == goal:
                return path + [goal]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def _describe(graph, cycle):
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + \
        f" -> {cycle[-1]}"


def test_the_sources_were_read():
    assert "fastnn.training" in MODULES and "fastnn._kernels.dense" in MODULES
    found = {(src, dst, kind) for src, dst, _, kind, _ in EDGES}
    assert ("fastnn.training", "fastnn.history", "module") in found
    # an import under ``if TYPE_CHECKING:`` is left out, its else branch is not
    assert ("fastnn", "fastnn.sklearn", "function") in found
    assert not any(src == "fastnn.model" and kind == "module" and dst == "fastnn.callbacks"
                   for src, dst, kind in found)


def test_no_import_cycle():
    kept = [e for e in EDGES if not (e[3] == "function" and (e[0], e[4]) in DEFERRED)]
    graph = _graph(kept)
    cycles = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            back = _path(graph, dst, src)
            if back is not None:
                cycle = [src] + back
                if min(cycle[:-1]) == src:     # each cycle once, from its smallest module
                    cycles.append(_describe(graph, cycle))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_function_level_imports_break_a_cycle_or_are_listed():
    top = _graph([e for e in EDGES if e[3] == "module"])
    needless = {f"{src}:{line} imports {named} inside a function; it closes no cycle at module "
                f"level, so it belongs there (or in DEFERRED with its reason)"
                for src, dst, line, kind, named in EDGES
                if kind == "function" and (src, named) not in DEFERRED
                and _path(top, dst, src) is None}
    assert not needless, "\n".join(sorted(needless))


def test_every_deferred_import_exists():
    present = {(src, named) for src, _, _, kind, named in EDGES if kind == "function"}
    stale = sorted(set(DEFERRED) - present)
    assert not stale, f"DEFERRED lists imports that are no longer in a function: {stale}"
    assert all(reason.strip() for reason in DEFERRED.values())


def test_history_lives_in_fastnn_history():
    import pickle

    from fastnn import history, training

    assert fastnn.History is history.History is training.History
    assert history.History.__module__ == "fastnn.history"
    h = history.History()
    h.append(0, {"loss": 1.5, "val_accuracy": 0.5})
    # a History pickled before the move names fastnn.training.History and still loads
    old = pickle.dumps(h, protocol=0).replace(b"fastnn.history", b"fastnn.training")
    assert b"fastnn.training" in old
    back = pickle.loads(old)
    assert type(back) is history.History and back.history == h.history and back.epoch == [0]
    assert history.monitor_mode("val_accuracy") == "max"
    assert history.monitor_mode("val_r2") == "max" and history.monitor_mode("loss") == "min"
    assert history.monitor_mode("loss", "max") == "max"
