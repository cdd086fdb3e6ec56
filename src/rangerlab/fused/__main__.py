"""Build the fused CPU kernels ahead of time: ``python -m rangerlab.fused``.

For container images, and before ``torchrun`` starts its processes: the first fused step then
loads the cached build instead of compiling for under a minute. The cache is
``$RANGERLAB_CACHE`` (default ``~/.cache/rangerlab``), one directory per source, torch, CPU and
Python environment. Exits with status 1, printing the cause, when the build fails.
"""

from __future__ import annotations

import argparse
import sys

from . import _build


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the kernels; print where they are; return the exit status."""
    parser = argparse.ArgumentParser(prog=_build.PREBUILD, description=__doc__)
    parser.parse_args(argv)
    try:
        _build.load()
    except Exception as error:
        print(f"rangerlab: the fused kernels could not be built: {error}", file=sys.stderr)
        return 1
    how = f"built in {_build.build_seconds:.0f} s" if _build.build_seconds else "already built"
    print(f"rangerlab: fused kernels ready ({how}) in {_build.build_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
