"""What the independent Python clients share: proto/floodgate/v1/*.proto compiled at run time
(so they share nothing with the Rust code but the .proto files), and the runner of their
checks. Compiles proto/floodgate/v1/*.proto at run time for the independent Python clients
(test_*.py in this folder), so they share nothing with the Rust code but the .proto files.
"""
import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
import traceback

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


def run_suite(suite_class, doc, options=()):
    """Runs every `test_*` method of `suite_class(target, **options)` and prints "N passed,
    M failed" last; exits non-zero on any failure (or when nothing ran). `options` are
    (flag name, help) pairs of required command-line options, given to the suite by name."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="host:port of a floodgate server")
    parser.add_argument("-k", default="", help="run only tests whose name contains this")
    for name, help_text in options:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=help_text)
    args = parser.parse_args()
    suite = suite_class(args.server.removeprefix("http://"),
                        **{name: getattr(args, name) for name, _ in options})
    tests = sorted(name for name in dir(suite) if name.startswith("test_") and args.k in name)
    passed = failed = 0
    for name in tests:
        started = time.monotonic()
        try:
            getattr(suite, name)()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.2f}s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not passed else 0)
