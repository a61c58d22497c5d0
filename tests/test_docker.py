"""The Docker image and compose file, checked without a Docker engine.

test_container.py builds and runs the image on a real engine; these checks need none, so they
run everywhere: the package list the image installs (compared with the setup script's), the
health check against a real HTTP server, the build context, the seccomp profile, and the
compose file's settings against the agent's own config model.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from support.loopback import serving

from agent.cli import SUBCOMMANDS
from agent.config import Settings
from agent.errors import ErrorCode
from agent.stream.browser import SANDBOX_HELP, launch_error

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_LIST = ROOT / "system-packages.txt"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, args = logical.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


ALL_STAGES = instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def stages(parsed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The build stages, each from its FROM on (what comes before the first FROM is dropped)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in parsed:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


# The image is the last stage; the stages before only build what it copies.
DOCKERFILE = stages(ALL_STAGES)[-1]


def arguments(keyword: str) -> list[str]:
    return [args for kw, args in DOCKERFILE if kw == keyword]


def listed_packages() -> list[str]:
    lines = PACKAGE_LIST.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def fake_apt_get(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose ``apt-get`` only records its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "apt-get.args"
    script = bin_dir / "apt-get"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n', encoding="utf-8")
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, record


def installed(record: Path) -> list[str]:
    args = record.read_text(encoding="utf-8").split()
    assert args[0] == "install"
    return [arg for arg in args[1:] if not arg.startswith("-")]


def test_package_list_is_not_empty() -> None:
    assert {"chromium", "ffmpeg", "xvfb", "fonts-noto-color-emoji"} <= set(listed_packages())
    # Debian's python3 runs the image's virtualenv; Playwright's Node.js needs libatomic.so.1,
    # which slim systems lack (the image crashed at start without it).
    assert {"python3", "libatomic1"} <= set(listed_packages())


def debian_release() -> str:
    path = Path("/etc/debian_version")
    return path.read_text(encoding="utf-8").split(".")[0] if path.exists() else ""


@pytest.mark.skipif(
    debian_release() != "12" or shutil.which("apt-cache") is None,
    reason="needs Debian 12 (bookworm), the image's base, to ask apt",
)
def test_every_listed_package_exists_in_bookworm() -> None:
    policy = subprocess.run(
        ["apt-cache", "policy", *listed_packages()], capture_output=True, text=True, check=True
    ).stdout
    candidates = dict(re.findall(r"^(\S+):\n(?:.*\n)*?\s+Candidate: (\S+)", policy, re.M))
    missing = [p for p in listed_packages() if candidates.get(p, "(none)") == "(none)"]
    assert missing == []


def test_dockerfile_installs_exactly_the_package_list(tmp_path: Path) -> None:
    copies = [args.split() for args in arguments("COPY") if "system-packages.txt" in args]
    assert len(copies) == 1, "the Dockerfile must COPY system-packages.txt once"
    in_image = copies[0][-1]
    installs = [args for args in arguments("RUN") if "apt-get install" in args]
    assert len(installs) == 1, "every system package must come from the one list"
    # Run the step that turns the file into apt-get arguments, on the repo's file, with an
    # apt-get that only records (the other steps of that RUN change the machine).
    (step,) = [part for part in installs[0].split("&&") if "apt-get install" in part]
    assert in_image in step
    env, record = fake_apt_get(tmp_path)
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", step.replace(in_image, str(PACKAGE_LIST))],
        env=env,
        check=True,
    )
    assert installed(record) == listed_packages()


def test_setup_script_installs_the_same_list() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    (definition,) = [line for line in setup.splitlines() if line.startswith("packages()")]
    produced = subprocess.run(
        ["bash", "-c", f'ROOT="{ROOT}"; {definition}\npackages'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert produced == listed_packages()
    # apt-get there only installs what that list (plus setup-only extras) put in variables.
    for line in setup.splitlines():
        if "apt-get install" in line:
            names = [w for w in line.split("install", 1)[1].split() if not w.startswith("-")]
            assert names, line
            assert all(name.startswith('"$') for name in names), line


def test_image_runs_unprivileged_and_keeps_the_sandbox() -> None:
    users = arguments("USER")
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    user_at = max(i for i, (kw, _) in enumerate(DOCKERFILE) if kw == "USER")
    entry_at = max(i for i, (kw, _) in enumerate(DOCKERFILE) if kw == "ENTRYPOINT")
    assert user_at < entry_at
    commands = " ".join(args for _, args in DOCKERFILE)
    assert "--no-sandbox" not in commands
    agent = compose()["services"]["pagecast"]
    assert "--no-sandbox" not in json.dumps(agent)
    assert not agent.get("privileged")


def test_every_stage_builds_on_the_documented_base() -> None:
    (base,) = [args for kw, args in ALL_STAGES[:1] if kw == "ARG"]
    assert base == "BASE=debian:bookworm-slim"
    froms = [args.split()[0] for kw, args in ALL_STAGES if kw == "FROM"]
    assert froms
    assert set(froms) == {"${BASE}"}
    # scripts/docker-base.sh makes that image when it cannot be pulled.
    script = (ROOT / "scripts" / "docker-base.sh").read_text(encoding="utf-8")
    assert 'IMAGE="${1:-debian:bookworm-slim}"' in script


def test_build_stage_leaves_only_the_virtualenv() -> None:
    build_stage = stages(ALL_STAGES)[0]
    assert build_stage[0][1].endswith(" AS venv")
    copies = [args for args in arguments("COPY") if args.startswith("--from=")]
    assert copies == ["--from=venv /opt/pagecast /opt/pagecast"]
    installs = " ".join(args for kw, args in build_stage if kw == "RUN")
    # pip and setuptools leave the venv; pip keeps no cache in the layer.
    assert "--no-cache-dir" in installs
    assert "uninstall -y" in installs


def test_debian_frontend_is_a_build_argument_only() -> None:
    assert not any("DEBIAN_FRONTEND" in args for kw, args in ALL_STAGES if kw == "ENV")
    for stage in stages(ALL_STAGES):
        assert ("ARG", "DEBIAN_FRONTEND=noninteractive") in stage


def test_build_fails_when_playwrights_driver_cannot_start() -> None:
    smoke = [args for args in arguments("RUN") if "sync_playwright().start().stop()" in args]
    assert len(smoke) == 1
    position = DOCKERFILE.index(("RUN", smoke[0]))
    user_at = DOCKERFILE.index(("USER", arguments("USER")[-1]))
    copy_at = max(i for i, (kw, args) in enumerate(DOCKERFILE) if kw == "COPY")
    assert position > user_at, "run it as the agent will"
    assert position > copy_at, "run it once the virtualenv is in place"


def test_entrypoint_is_the_installed_cli() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (entrypoint,) = arguments("ENTRYPOINT")
    (cmd,) = arguments("CMD")
    assert json.loads(entrypoint) == ["pagecast"]
    assert "pagecast" in pyproject["project"]["scripts"]
    assert json.loads(cmd)[0] in SUBCOMMANDS


def test_image_never_downloads_playwright_browsers() -> None:
    assert not any("playwright install" in args for args in arguments("RUN"))


def test_config_is_a_mounted_file_or_the_environment() -> None:
    # The agent reads config.yaml from its working directory only when it exists.
    assert arguments("WORKDIR")[-1] == "/config"
    assert not any("PAGECAST_CONFIG" in args for args in arguments("ENV"))


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, ``!`` re-includes; parents count."""
    included = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.split("/")[-1], glob[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, glob) for c in candidates)
        if hit:
            included = negate
    return included


def test_build_context_holds_every_copied_file() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args.split() for kw, args in ALL_STAGES if kw == "COPY"]
    sources = [src for words in copies if not words[0].startswith("--from=") for src in words[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repo"
        assert dockerignore_includes(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for secret_or_bulk in (".venv", ".git", "tests", "config.yaml"):
        assert not dockerignore_includes(secret_or_bulk, patterns), secret_or_bulk
    assert not dockerignore_includes("agent/__pycache__/x.pyc", patterns)


@pytest.fixture
async def healthz_server(unused_tcp_port: int) -> AsyncIterator[tuple[int, dict[str, int]]]:
    answer = {"status": 200}

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": answer["status"] == 200}, status=answer["status"])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    async with serving(app, unused_tcp_port):
        yield unused_tcp_port, answer


async def run_healthcheck(port: int) -> int:
    (healthcheck,) = arguments("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, "PAGECAST_STREAM__HTTP_PORT": str(port)}
    # A subprocess, awaited: the server under test answers from this event loop meanwhile.
    proc = await asyncio.create_subprocess_exec(sys.executable, *command[1:], env=env)
    return await proc.wait()


async def test_healthcheck_follows_healthz(healthz_server: tuple[int, dict[str, int]]) -> None:
    port, answer = healthz_server
    assert await run_healthcheck(port) == 0
    answer["status"] = 503
    assert await run_healthcheck(port) != 0


def test_healthcheck_and_expose_use_the_default_http_port() -> None:
    default = str(Settings(node_id="x").stream.http_port)
    (healthcheck,) = arguments("HEALTHCHECK")
    assert f"'{default}'" in healthcheck
    assert arguments("EXPOSE") == [default]


async def test_healthcheck_fails_when_nothing_listens(unused_tcp_port: int) -> None:
    assert await run_healthcheck(unused_tcp_port) != 0


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_runs_the_agent_beside_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    assert {"mosquitto", "pagecast"} <= set(services)
    agent = services["pagecast"]
    assert agent["network_mode"] == "host"
    assert agent["build"] == "."
    assert "SYS_ADMIN" in agent["cap_add"]  # type: ignore[operator]
    assert "no-new-privileges:true" in agent["security_opt"]  # type: ignore[operator]
    # Playwright starts Chromium with --disable-dev-shm-usage: /dev/shm stays empty.
    assert "shm_size" not in agent
    # The wish survives a new container: the image's state directory is a named volume.
    assert "PAGECAST_STATE_DIR=/state" in arguments("ENV")
    assert "state:/state" in agent["volumes"]  # type: ignore[operator]
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    host_comment = text[: text.index("network_mode: host")].rsplit("build:", 1)[1]
    assert re.search(r"mDNS", host_comment), "say why host networking"
    # The example's variables must be ones the agent accepts.
    environment = agent["environment"]
    assert isinstance(environment, dict)
    for key in list(os.environ):
        if key.startswith("PAGECAST_"):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.node_id == environment["PAGECAST_NODE_ID"]
    assert settings.mqtt.host == environment["PAGECAST_MQTT__HOST"]


SECCOMP = json.loads((ROOT / "docker" / "seccomp-chromium.json").read_text(encoding="utf-8"))


def test_seccomp_profile_adds_only_clone_and_unshare() -> None:
    assert SECCOMP["defaultAction"] == "SCMP_ACT_ERRNO"
    unconditional = [
        rule
        for rule in SECCOMP["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW"
        and not rule.get("args")
        and not rule.get("includes")
        and not rule.get("excludes")
    ]
    granted = {name for rule in unconditional for name in rule["names"]}
    # Chromium's zygote clones with CLONE_NEWPID without CLONE_NEWUSER: a rule that allowed
    # CLONE_NEWUSER only was tried and fails; the profile allows the two calls outright.
    assert {"clone", "unshare"} <= granted
    # Everything else SYS_ADMIN would unlock stays behind the capability, as in Docker's profile.
    assert not granted & {"mount", "setns", "bpf", "umount2", "ptrace", "perf_event_open"}
    gated = [r for r in SECCOMP["syscalls"] if "CAP_SYS_ADMIN" in r["includes"].get("caps", [])]
    assert any("mount" in rule["names"] for rule in gated)


def test_seccomp_profile_is_dockers_default_plus_one_rule() -> None:
    source = Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")
    if not source.exists():
        pytest.skip("Docker's default profile (Debian: golang-github-docker-docker-dev) absent")
    default = json.loads(source.read_text(encoding="utf-8"))
    assert SECCOMP["syscalls"][:-1] == default["syscalls"]
    assert {k: v for k, v in SECCOMP.items() if k != "syscalls"} == {
        k: v for k, v in default.items() if k != "syscalls"
    }


def test_sandbox_failure_becomes_one_line_that_says_what_to_add() -> None:
    chromium_says = (
        "BrowserType.launch: Target page, context or browser has been closed\n"
        "Browser logs:\n[pid=41][err] [0101/000000.000:FATAL:zygote_host_impl_linux.cc(128)] "
        "No usable sandbox! If you are running on Ubuntu 23.10+ or another Linux distro that "
        "has disabled unprivileged user namespaces with AppArmor, see ...\n" + "hint\n" * 200
    )
    error = launch_error(chromium_says)
    assert error.code is ErrorCode.PIPELINE_FAILED
    assert error.message == SANDBOX_HELP
    assert "\n" not in error.message
    assert len(error.message) < 300
    assert "--cap-add SYS_ADMIN" in error.message
    assert "seccomp-chromium.json" in error.message
    other = launch_error("Executable doesn't exist at /usr/bin/chromium")
    assert other.message == "Chromium did not start: Executable doesn't exist at /usr/bin/chromium"
