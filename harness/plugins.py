"""Import the method packages so their ``@register_method`` decorators run.

``harness`` never imports ``neulite`` or ``baselines`` statically (dependencies point one way);
it imports them by name here, plus any module named in ``FL_HARNESS_PLUGINS`` (comma-separated),
which is how a user's own method joins without touching the project.
"""

from __future__ import annotations

import importlib
import importlib.util

from harness.registry import BUILTIN, plugin_names


class PluginError(RuntimeError):
    """A method module that does not import (or registers a name twice)."""


def load_plugins() -> None:
    extra = plugin_names()
    for name in (*BUILTIN, *extra):
        if name in BUILTIN and importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as err:  # whatever the module raises (even an exit): one line naming it
            source = "FL_HARNESS_PLUGINS" if name in extra else "built-in methods"
            what = f"it called sys.exit({err.code!r})" if isinstance(err, SystemExit) else \
                f"{type(err).__name__}: {err}"
            raise PluginError(f"{source}: cannot import {name!r}: {what}") from None
