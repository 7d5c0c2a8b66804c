"""Build hook: generate esd/es_pb2.py from proto/es/v1/es.proto with protoc.

The generated module is written into the build tree only (never into the
sources, never committed). The schema is looked up as $ESD_PROTO (a path
to es.proto), else ../../proto/es/v1/es.proto beside this file (pip builds
in place); protoc is $PROTOC, else protoc on the PATH.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithProto(build_py):
    """build_py, then protoc into the built package."""

    def run(self):
        super().run()
        proto = os.environ.get("ESD_PROTO") or os.path.join(HERE, "..", "..", "proto", "es",
                                                            "v1", "es.proto")
        proto = os.path.abspath(proto)
        if not os.path.isfile(proto):
            raise SystemExit(f"esd: the schema {proto} is missing (set ESD_PROTO)")
        protoc = os.environ.get("PROTOC") or shutil.which("protoc")
        if not protoc:
            raise SystemExit("esd: protoc is needed to build (Debian: protobuf-compiler)")
        out = os.path.join(self.build_lib, "esd")
        os.makedirs(out, exist_ok=True)
        subprocess.check_call([protoc, f"--python_out={out}", f"-I{os.path.dirname(proto)}",
                               proto])


setup(cmdclass={"build_py": BuildWithProto})
