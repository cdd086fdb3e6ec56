"""Headless Chromium for the tests that look at pages as a reader would (the lab's report, the
docs site), started the same way by each."""

from __future__ import annotations

import shutil
from pathlib import Path

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

#: Headless, as root, and quiet on a machine without a network: without the background-networking
#: flags Chromium's connections are refused many at a time.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def command(profile: Path, *args: str) -> list[str]:
    """The command line: Chromium, the common flags, a fresh profile folder, then ``args``."""
    assert BROWSER is not None, "no chromium"
    return [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args]
