"""Compiles proto/floodgate/v1/*.proto at run time for the independent Python clients
(test_*.py in this folder), so they share nothing with the Rust code but the .proto files.
"""
import atexit
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def compile_protos():
    """Compiles proto/floodgate/v1/*.proto into a temporary directory and imports from it."""
    try:
        import grpc  # noqa: F401
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:
        raise SystemExit(f"{e}: run `python3 -m pip install -r tests/python/requirements.txt`")

    out = tempfile.mkdtemp(prefix="floodgate-py-")
    atexit.register(shutil.rmtree, out, True)
    # grpc_tools ships the well-known types (google/protobuf/duration.proto).
    includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join("floodgate", "v1", f)
        for f in sorted(os.listdir(os.path.join(PROTO_ROOT, "floodgate", "v1")))
        if f.endswith(".proto")
    ]
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{includes}"]
    args += [f"--python_out={out}", f"--grpc_python_out={out}"] + files
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with {code} for {files}")
    sys.path.insert(0, out)
