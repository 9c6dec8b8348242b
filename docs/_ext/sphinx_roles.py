"""Griffe extension: the library's Sphinx-flavoured docstrings as the Markdown mkdocstrings renders.

The docstrings are Google style with reStructuredText roles (``:class:`X```, ``:math:`...```) and
``.. math::`` blocks, which read well in ``help()``. For the API reference pages this rewrites,
before parsing, each docstring's

- ``:class:`~a.b.C``` (and ``func``, ``meth``, ``attr``, ``data``, ``mod``, ``obj``, ``exc``)
  to inline code ``C`` (``a.b.C`` without the ``~``);
- ``:math:`...``` to ``$...$`` and ``.. math::`` blocks to ``$$ ... $$`` (pymdownx.arithmatex);
- an ``Example:`` section header to ``Examples:``, so that ``>>>`` lines render as code.

It also gives each ``equinox.Module`` without its own ``__init__`` the one equinox generates
from its fields (as griffe does for dataclasses), so that the reference shows how to build it.
Only the rendered pages change; the sources stay as they are.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_XREF = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


def _xref(match: re.Match) -> str:
    tilde, target = match.groups()
    name = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{name}`"


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        trailing = len(block) < 1 or i < len(lines)
        body = textwrap.dedent("\n".join(b for b in block if b.strip()))
        out += [f"{indent}$$", *(indent + b for b in body.split("\n")), f"{indent}$$"]
        if trailing:
            out.append("")
    return "\n".join(out)


def convert(text: str) -> str:
    """The Markdown form of one docstring (see the module docstring)."""
    text = _math_blocks(text)
    text = _MATH.sub(lambda m: f"${m.group(1).strip()}$", text)
    text = _XREF.sub(_xref, text)
    return _EXAMPLE.sub(r"\1Examples:", text)


def _ancestors(cls: griffe.Class) -> list[griffe.Class]:
    """The base classes in the same package, nearest first (the others skipped)."""
    found: list[griffe.Class] = []
    root = cls.package
    for base in cls.bases:
        path = getattr(base, "canonical_path", str(base))
        if not path.startswith(root.path + "."):
            continue
        try:
            target = root[path[len(root.path) + 1 :]]
            target = target.final_target if target.is_alias else target
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if target.is_class and target not in found:
            found += [target, *(a for a in _ancestors(target) if a not in found)]
    return found


def _is_module(cls: griffe.Class) -> bool:
    """Whether the class is an ``equinox.Module`` or a ``NamedTuple`` (its fields: the init)."""
    return any(
        getattr(base, "canonical_path", str(base)) in ("equinox.Module", "typing.NamedTuple")
        for c in (cls, *_ancestors(cls))
        for base in c.bases
    )


def _default(value: Any) -> Any:
    """The default of a field: its value, or ``default=`` of an ``eqx.field(...)`` call."""
    if isinstance(value, griffe.ExprCall) and str(value.function).endswith("field"):
        for arg in value.arguments:
            if isinstance(arg, griffe.ExprKeyword) and arg.name == "default":
                return arg.value
            if isinstance(arg, griffe.ExprKeyword) and arg.name == "default_factory":
                return "<factory>"
        return None
    return value


def _module_init(cls: griffe.Class) -> None:
    chain = [cls, *_ancestors(cls)]
    own = [c.members.get("__init__") for c in chain]
    if any(i is not None and "synthesised" not in i.labels for i in own):
        return
    if any("dataclass" in str(d.value) for d in cls.decorators) or not _is_module(cls):
        return
    params = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for c in reversed(chain):
        for attr in c.attributes.values():
            if "instance-attribute" not in attr.labels or attr.annotation is None:
                continue
            if str(attr.annotation).startswith("ClassVar"):
                continue
            params = [p for p in params if p.name != attr.name]
            params.append(
                griffe.Parameter(
                    attr.name,
                    annotation=attr.annotation,
                    kind=griffe.ParameterKind.positional_or_keyword,
                    default=_default(attr.value),
                )
            )
    if len(params) == 1:  # no fields (an abstract base)
        return
    init = griffe.Function(
        "__init__", lineno=cls.lineno, parameters=griffe.Parameters(*params), returns="None"
    )
    init.labels.add("synthesised")
    cls.set_member("__init__", init)


def _classes(obj: griffe.Object) -> list[griffe.Class]:
    found = []
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            found.append(member)
        if member.is_module or member.is_class:
            found += _classes(member)
    return found


class SphinxRoles(griffe.Extension):
    """Rewrite each loaded object's docstring with :func:`convert`; give Modules their init."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name == "smc_ebm":
            for cls in _classes(pkg):
                _module_init(cls)
