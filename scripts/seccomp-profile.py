"""Write docker/seccomp-chromium.json: Docker's default seccomp profile, plus clone and unshare.

Chromium's sandbox makes new namespaces: its zygote clones with CLONE_NEWUSER | CLONE_NEWPID |
CLONE_NEWNET and later with CLONE_NEWPID alone, and calls unshare. Docker's default profile
allows namespace flags on clone/unshare only to containers holding SYS_ADMIN; a rule that
allowed CLONE_NEWUSER alone was tried and fails ("Zygote could not fork"). So this profile
allows the two calls outright and changes nothing else: a narrower grant than SYS_ADMIN, which
also unlocks mount, bpf, setns and more.

The input is the profile the Docker engine compiles in, as Debian ships it in the engine's
source package (golang-github-docker-docker-dev):
    python3 scripts/seccomp-profile.py [/path/to/default.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEBIAN_SOURCE = Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")
OUTPUT = Path(__file__).resolve().parents[1] / "docker" / "seccomp-chromium.json"
NAMESPACE_CALLS = {
    "names": ["clone", "unshare"],
    "action": "SCMP_ACT_ALLOW",
    "args": [],
    "comment": "pagecast: Chromium's sandbox creates user, PID and network namespaces",
    "includes": {},
    "excludes": {},
}


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEBIAN_SOURCE
    profile = json.loads(source.read_text(encoding="utf-8"))
    profile["syscalls"].append(NAMESPACE_CALLS)
    OUTPUT.write_text(json.dumps(profile, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(Path.cwd())} from {source}")


if __name__ == "__main__":
    main()
