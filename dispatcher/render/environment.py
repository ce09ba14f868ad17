"""The Jinja2 environment templates run in, and where the shipped templates are.

Jinja2's immutable sandbox, with event data looked up as data first; only `.html.j2` files autoescaped; missing
data as `ReadableUndefined`; the filters and tests of `filters.py`; templates compiled once and kept for the
environment's life. A `Renderer` builds one over `FileSystemLoader([override_dir, shipped_dir])`, so a file under
the config's `templates.dir` overrides the shipped file of the same path, file by file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.environment import TemplateModule
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

import dispatcher

from .filters import FILTERS, TESTS
from .values import ReadableUndefined, finalize


def shipped_templates_dir() -> Path:
    """Where the shipped templates are: inside the installed package, else the source checkout's `templates/`."""
    package_dir = Path(dispatcher.__file__).resolve().parent
    inside = package_dir / "templates"
    return inside if inside.is_dir() else package_dir.parent / "templates"


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with event data looked up as data first.

    `data.domain` on a plain dict is an item, not an attribute: trying the item first skips the failing attribute
    lookup (and its exception) that Jinja does otherwise, which matters at one lookup per field per message. A
    field named like a dict method (`items`, `keys`) therefore reads the field, and a blank field is missing.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._memo: dict[str, jinja2.Template] = {}

    def get_template(self, name: Any, parent: Any = None, globals: Any = None) -> jinja2.Template:
        # Every `{% extends %}` and `{% import %}` asks again while rendering; templates never change during the
        # life of an environment (auto_reload is off), so a plain dict answers faster than Jinja's LRU cache.
        # (`parent` is ignored by the base environment's `join_path`, as here.)
        if globals is None and isinstance(name, str):
            found = self._memo.get(name)
            if found is None:
                found = self._memo[name] = super().get_template(name)
                # Each render copies the template's globals into a new context; Jinja keeps them as a ChainMap
                # over the environment's, which is slow to copy. They never change here: flatten them once.
                found.globals = dict(found.globals)
            return found
        return super().get_template(name, parent, globals)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                value = obj[attribute]
            except KeyError:
                # A missing field: what the sandbox would find too, after failing an attribute and an item lookup
                # (two exceptions), unless the name is one of dict's own (`data.items`).
                if attribute not in _DICT_ATTRIBUTES:
                    return self.undefined(obj=obj, name=attribute)
            else:
                # A blank string says no more than a missing field: let it read `(not given)` and be false.
                if type(value) is str and (not value or value.isspace()):
                    return self.undefined(obj=obj, name=attribute)
                return value
        elif type(obj) is TemplateModule and not attribute.startswith("_"):
            # `m.facts`: what an imported template exports (its macros and top-level values, made in the
            # sandbox). The sandbox would refuse only names starting with "_", as here.
            try:
                return obj.__dict__[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # A template's own macro is always safe to call; the sandbox's check is for everything else.
        if type(obj) is Macro:
            return context.call(obj, *args, **kwargs)
        return super().call(context, obj, *args, **kwargs)


def build_environment(loader: jinja2.BaseLoader) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment over `loader`: our undefined, finalize, filters and tests; compiled templates kept."""
    env = _Environment(
        loader=loader,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=ReadableUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # Templates are compiled once and kept: the pipeline renders every delivery, and a reload builds a new
        # Renderer, so there is nothing to gain from checking the files' mtimes on each render.
        auto_reload=False,
        cache_size=-1,
    )
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    return env
