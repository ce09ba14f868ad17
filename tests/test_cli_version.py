"""`dispatcher --version` prints the version of the package and exits 0."""

from __future__ import annotations

import subprocess
import sys

import dispatcher


def test_version_prints_the_package_version_and_exits_0() -> None:
    """`dispatcher --version` alone (no command needed) prints `dispatcher <version>` on stdout, nothing else."""
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"dispatcher {dispatcher.__version__}\n", "")
