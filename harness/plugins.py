"""Import the method packages so their ``@register_method`` decorators run.

``harness`` never imports ``neulite`` or ``baselines`` statically (dependencies point one way);
it imports them by name here, plus any module named in ``FL_HARNESS_PLUGINS`` (comma-separated),
which is how a user's own method joins without touching the project.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

BUILTIN = ("baselines", "neulite")


def load_plugins() -> None:
    extra = [m.strip() for m in os.environ.get("FL_HARNESS_PLUGINS", "").split(",") if m.strip()]
    for name in (*BUILTIN, *extra):
        if name in BUILTIN and importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name)
