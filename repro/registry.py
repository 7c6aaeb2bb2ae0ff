"""Method registry: a lazy built-in map plus the ``repro.methods`` entry-point group.

Nothing here imports a method module until the method is asked for, so listing methods (or
importing this module) never pulls in torch or a model.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from repro.interface import PoseMethod

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "repro.methods"

BUILTIN_METHODS: Mapping[str, str] = {
    "oracle": "methods.baselines.oracle:OracleMethod",
    "registrar_gtmask": "methods.baselines.registrar_gtmask:RegistrarGTMask",
    "storm": "methods.storm.method:StormMethod",
}
"""Methods shipped with the suite: name -> ``module:Class``. Keep in sync with pyproject's
entry points (a test checks that they agree)."""


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def available_methods() -> dict[str, str]:
    """All registered methods, name -> ``module:Class`` target, built-ins first.

    An installed package may add methods through the ``repro.methods`` entry-point group; it may
    not silently replace a built-in with a different class.
    """
    found = dict(BUILTIN_METHODS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            log.warning("entry point %s=%s ignored: built-in method %s is %s",
                        ep.name, ep.value, ep.name, found[ep.name])
            continue
        found[ep.name] = ep.value
    return found


def _import_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get_method_class(name: str) -> type[PoseMethod]:
    """Import and return the class registered as ``name``."""
    methods = available_methods()
    if name not in methods:
        raise UnknownMethodError(f"unknown method {name!r}; registered: {', '.join(sorted(methods))}")
    cls = _import_target(methods[name])
    if not (isinstance(cls, type) and issubclass(cls, PoseMethod)):
        raise TypeError(f"{methods[name]} (method {name!r}) is not a PoseMethod subclass")
    if getattr(cls, "name", None) != name:
        raise TypeError(f"{methods[name]} declares name {getattr(cls, 'name', None)!r}, registered as {name!r}")
    return cls


def create_method(name: str, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> PoseMethod:
    """Instantiate the method ``name`` with a config mapping and an explicit seed."""
    return get_method_class(name)(cfg=cfg, seed=seed)
