"""Find Debian's Chromium for the browser tests, installing it on a fresh machine.

Never downloads a browser of Playwright's own (`playwright install`): the tests drive the system
Chromium through `executable_path`. When Chromium is missing and we are root with apt-get, it is
installed (bounded in time); otherwise the tests fail with a message saying how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_PATH = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "the browser tests need Chromium: install Debian's package with "
    "`sudo apt-get update && sudo apt-get install -y chromium` "
    "(or point CHROMIUM_PATH at a Chromium binary)"
)
# Flags from the machine notes: no sandbox as root, and no background traffic to Google's hosts
# (the network is closed; without these Chromium keeps retrying connections).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class ChromiumMissing(RuntimeError):
    pass


def find() -> Path | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return Path(configured) if Path(configured).exists() else None
    if DEFAULT_PATH.exists():
        return DEFAULT_PATH
    found = shutil.which("chromium")
    return Path(found) if found else None


def ensure(timeout: float = 900.0) -> Path:
    """The Chromium binary, installed with apt-get first if need be; ChromiumMissing otherwise."""
    path = find()
    if path is not None:
        return path
    if os.environ.get("CHROMIUM_PATH"):
        raise ChromiumMissing(f"CHROMIUM_PATH={os.environ['CHROMIUM_PATH']} does not exist")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ChromiumMissing(f"{INSTALL_HINT}; not root with apt-get, so not installed here")
    _apt(["update"], timeout / 3)
    _apt(["install", "-y", "chromium"], timeout)
    path = find()
    if path is None:
        raise ChromiumMissing(f"apt-get installed chromium but no binary was found; {INSTALL_HINT}")
    return path


def _apt(args: list[str], timeout: float) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "-o", "DPkg::Lock::Timeout=120", "-q", *args]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ChromiumMissing(
            f"`{' '.join(argv)}` took over {timeout:.0f} s; {INSTALL_HINT}"
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ChromiumMissing(f"`{' '.join(argv)}` failed:\n{tail}\n{INSTALL_HINT}")


if __name__ == "__main__":
    print(ensure())
