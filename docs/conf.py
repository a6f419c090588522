"""Sphinx configuration: fastnn's API reference, built from the docstrings.

Build (warnings are errors; every internal cross-reference must resolve)::

    python -m pip install ".[docs]"
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

autodoc imports the installed fastnn (with its compiled kernels). ``sphinx-build`` does not put
the current directory on ``sys.path``; ``python -m sphinx`` run from the source tree would import
the uncompiled sources instead.
"""
import fastnn

project = "fastnn"
author = "fastnn contributors"
copyright = "fastnn contributors"
release = version = fastnn.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]

# NumPy-style docstrings; signatures carry the type hints, descriptions keep their prose types
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = False   # "x : ndarray (n, m) of the network's dtype" stays prose, not links
napoleon_custom_sections = [("Attributes", "params_style")]   # the same for attributes
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

# Nitpicky: every reference to a fastnn object must resolve. Objects of other libraries are
# not linked (no intersphinx: the build works offline) and are listed here instead.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|numpy\.typing|scipy|sklearn|dask|joblib|threadpoolctl|typing"
               r"|collections\.abc|os|io|pathlib)(\..*)?"),
    (r"py:class", r"(ArrayLike|DTypeLike|NDArray|IO|Any|Callable|Iterable|Iterator|Sequence"
                  r"|Mapping|PathLike|Path|Generator|TextIO|BinaryIO)"),
    (r"py:class", r"(optional|callable|array-like|array_like|ndarray|function)"),
    (r"py:class", r"fastnn(\.\w+)*\._\w+"),     # private base classes (show-inheritance)
    (r"py:class", r"fastnn\._kernels\..*"),      # compiled objects of the private kernel package
]



def _skip_generated(app, what, name, obj, skip, options):
    # scikit-learn's generated metadata-routing setters (set_fit_request, ...) are not fastnn's
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _resolve_reexport(app, env, node, contnode):
    """``fastnn.Sequential`` (the public name) -> ``fastnn.model.Sequential`` (where autodoc
    documents it), for every name fastnn re-exports; anything else stays unresolved (and is
    reported)."""
    import importlib

    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("fastnn."):
        return None
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):   # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        owner = getattr(obj, "__module__", None) or ""
        if not owner.startswith("fastnn"):
            return None
        qual = getattr(obj, "__qualname__", parts[-1])
        real = f"{owner}.{qual}"
        if real == target:
            return None
        domain = env.get_domain("py")
        return domain.resolve_xref(env, node.get("refdoc"), app.builder, node.get("reftype"),
                                   real, node, contnode)
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated)
    app.connect("missing-reference", _resolve_reexport)


html_theme = "alabaster"
html_static_path = []
