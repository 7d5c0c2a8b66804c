"""The message classes of es.v1, generated from proto/es/v1/es.proto by protoc.

Design notes: the generated module (es_pb2.py) is never committed. An
installed package carries it beside this file (setup.py runs protoc while
building); a source tree run in place finds it in the directory named by
$ESD_PB_DIR (the meson build writes it to build/client/python/). Nothing
else in the package imports es_pb2 directly, so there is one place that
knows where it comes from.
"""

import importlib.util
import os

__all__ = ["pb", "origin"]


def _load():
    try:
        from . import es_pb2  # type: ignore[attr-defined]

        return es_pb2, es_pb2.__file__
    except ImportError:
        pass
    where = os.environ.get("ESD_PB_DIR", "")
    path = os.path.join(where, "es_pb2.py") if where else ""
    if not path or not os.path.isfile(path):
        raise ImportError(
            "esd: the generated es_pb2 module is missing: install the package "
            "(pip install ./client/python) or set ESD_PB_DIR to the directory "
            "where protoc wrote es_pb2.py (build/client/python)"
        )
    spec = importlib.util.spec_from_file_location("esd.es_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


pb, origin = _load()
