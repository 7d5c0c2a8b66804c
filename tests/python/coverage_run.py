"""Run the Python client's tests under python3-coverage and report the line
coverage of the esd package; exit 1 below the floor (default 90 %).

    coverage_run.py [--fail-under N] [TEST-MODULE...]

The data file goes to $ESD_COVERAGE_FILE (the meson build dir), else a
temporary directory.
"""

import argparse
import os
import sys
import tempfile
import unittest

import coverage

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.normpath(os.path.join(HERE, "..", "..", "client", "python"))

MODULES = ["test_schema", "test_client", "test_aio", "test_lifecycle", "test_aggregate",
           "test_security", "test_account"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fail-under", type=float, default=90.0)
    ap.add_argument("modules", nargs="*", default=MODULES)
    args = ap.parse_args()
    data = os.environ.get("ESD_COVERAGE_FILE") or os.path.join(tempfile.mkdtemp(), ".coverage")
    cov = coverage.Coverage(data_file=data, source=[os.path.join(PKG, "esd")],
                            omit=["*/es_pb2.py"])
    cov.erase()
    cov.start()
    sys.path.insert(0, HERE)
    suite = unittest.defaultTestLoader.loadTestsFromNames(args.modules)
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    cov.stop()
    cov.save()
    total = cov.report(show_missing=True, file=sys.stdout)
    print(f"esd package line coverage: {total:.1f} % (floor {args.fail_under:g} %)")
    if not result.wasSuccessful():
        return 1
    return 0 if total >= args.fail_under else 1


if __name__ == "__main__":
    sys.exit(main())
