"""The documentation keeps up with the code.

* Every public name (``smc_ebm.__all__``, each public subpackage's ``__all__``) is in the API
  reference: the reference pages are ``::: smc_ebm.X`` directives of mkdocstrings, and a name
  counts when it, its module's page, or a page of a module that re-exports it is directed.
  Every directive names an object that exists.
* Every page of ``docs/reference/`` is in the site's navigation (mkdocs.yml).
* Every ``python`` code block of docs/api.md and of README.md compiles, and runs unless an HTML
  comment ``<!-- compile-only ... -->`` stands on the line before it (blocks that take minutes).
"""

import contextlib
import importlib
import inspect
import io
import re
from pathlib import Path

import pytest

import smc_ebm

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = [
    "smc_ebm",
    *(f"smc_ebm.{name}" for name in smc_ebm.__all__ if inspect.ismodule(getattr(smc_ebm, name))),
    "smc_ebm.recipes",
]
_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
_BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _directives():
    found = {}
    for page in sorted(DOCS.rglob("*.md")):
        for target in _DIRECTIVE.findall(page.read_text()):
            found.setdefault(target, page.relative_to(DOCS))
    return found


def _resolve(path):
    """The object a dotted path names (a module, or an attribute of the longest module)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_directives_resolve():
    directives = _directives()
    assert len(directives) > 10, "no API reference pages found under docs/"
    for target, page in directives.items():
        try:
            _resolve(target)
        except (ImportError, AttributeError) as err:
            pytest.fail(f"{page}: ::: {target} does not resolve ({err})")


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_in_reference(package):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{package} has no __all__"
    directives = set(_directives())
    pages = [importlib.import_module(d) for d in directives if d in PACKAGES]
    missing = []
    for name in names:
        obj = getattr(module, name)
        if package in directives - {"smc_ebm"} or f"{package}.{name}" in directives:
            continue
        if any(name in getattr(p, "__all__", ()) and getattr(p, name) is obj for p in pages):
            continue  # re-exported: documented on the page of the module it comes from
        missing.append(name)
    assert not missing, f"{package}: not in the API reference (docs/reference/): {missing}"


def test_reference_pages_in_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((DOCS / "reference").glob("*.md")):
        assert f"reference/{page.name}" in config, f"docs/reference/{page.name} not in the nav"


def _blocks():
    for doc in (DOCS / "api.md", ROOT / "README.md"):
        text = doc.read_text()
        for match in _BLOCK.finditer(text):
            comment, code = match.groups()
            line = text[: match.start(2)].count("\n") + 1
            run = not (comment and re.match(r"<!--\s*compile-only", comment))
            yield pytest.param(code, run, id=f"{doc.name}:{line}")


@pytest.mark.parametrize(("code", "run"), list(_blocks()))
def test_code_blocks(code, run):
    compiled = compile(code, "<docs>", "exec")
    if run:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compiled, {"__name__": "__docs__"})
