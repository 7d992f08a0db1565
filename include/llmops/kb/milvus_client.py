"""pymilvus, imported without pandas: half of a no-change re-index's CPU was pandas' import.

pymilvus imports pandas at import time only to name `DataFrame` in annotations and `isinstance` checks and to
take functions of `pandas.api.types`; this project never hands it a DataFrame. While pymilvus is imported, `pandas`
is a stand-in whose `DataFrame` and `Series` are classes that no object is an instance of until the real pandas
has been imported (no DataFrame can exist before), and then delegate the check to the real classes; the
functions import the real pandas on their first call. The stand-in is removed from `sys.modules` right after, so any
other `import pandas` gets the real one. Where pandas is already imported, nothing is replaced.

    from llmops.kb.milvus_client import MilvusClient, MilvusException, DataType, ...
"""

from __future__ import annotations

import importlib
import sys
import types

_STAND_INS = ("pandas", "pandas.api", "pandas.api.types")


def _real(*path: str):
    for name in _STAND_INS:  # while pymilvus is being imported, the stand-ins must not answer for the real one
        if isinstance(sys.modules.get(name), _StandIn):
            del sys.modules[name]
    module = importlib.import_module("pandas")
    for part in path:
        module = getattr(module, part)
    return module


class _Delegating(type):
    def __instancecheck__(cls, obj) -> bool:
        real = sys.modules.get("pandas")
        if real is None or isinstance(real, _StandIn):
            return False  # pandas was never imported: no DataFrame or Series exists
        return isinstance(obj, getattr(real, cls.__name__))


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__name__ == "pandas.api.types":  # `from pandas.api.types import f`: f imports pandas when called
            return lambda *args, **kwargs: getattr(_real("api", "types"), name)(*args, **kwargs)
        return getattr(_real(*self.__name__.split(".")[1:]), name)


def _import_pymilvus() -> None:
    if "pymilvus" in sys.modules or "pandas" in sys.modules:
        return
    top, api, api_types = (_StandIn(name) for name in _STAND_INS)
    top.__path__, api.__path__ = [], []
    top.api, api.types = api, api_types
    top.DataFrame = _Delegating("DataFrame", (), {})
    top.Series = _Delegating("Series", (), {})
    sys.modules.update(zip(_STAND_INS, (top, api, api_types), strict=True))
    try:
        import pymilvus  # noqa: F401
    finally:
        for name in _STAND_INS:
            if isinstance(sys.modules.get(name), _StandIn):
                del sys.modules[name]


_import_pymilvus()

from pymilvus import (  # noqa: E402
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    RRFRanker,
    WeightedRanker,
)
from pymilvus.exceptions import MilvusException  # noqa: E402

__all__ = ["AnnSearchRequest", "DataType", "Function", "FunctionType", "MilvusClient", "MilvusException",
           "RRFRanker", "WeightedRanker"]
