"""A real Docker engine for the container tests: the image built once, containers that clean up.

The engine must already answer (``scripts/test.sh --docker`` starts one); without it the
container tests are skipped, or fail when ``PAGECAST_DOCKER_TESTS=require`` says they must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "pagecast:test"
ADDON_IMAGE = "pagecast-addon:test"


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def build(tag: str, context: Path, *build_args: str) -> None:
    """``docker build --network host`` (pip and apt inside reach their registries directly)."""
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    subprocess.run(
        ["docker", "build", "-q", "--network", "host", "-t", tag, *args, str(context)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def docker_image() -> Iterator[str]:
    """The repository's image, on debian:bookworm-slim or the stand-in docker-base.sh makes."""
    if os.environ.get("PAGECAST_DOCKER_TESTS") == "skip":
        pytest.skip("container tests run with scripts/test.sh --docker")
    if not engine_answers():
        if os.environ.get("PAGECAST_DOCKER_TESTS") == "require":
            pytest.fail("no Docker engine answers, and PAGECAST_DOCKER_TESTS=require")
        pytest.skip("no Docker engine answers (scripts/test.sh --docker starts one)")
    subprocess.run(["bash", str(ROOT / "scripts" / "docker-base.sh")], check=True)
    build(IMAGE, ROOT)
    return IMAGE


@pytest.fixture(scope="session")
def addon_image(docker_image: str) -> str:
    build(ADDON_IMAGE, ROOT / "addon" / "pagecast", f"BUILD_FROM={docker_image}")
    return ADDON_IMAGE


async def docker(*args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {err.decode().strip()}")
    return out.decode().strip()


@dataclass
class Container:
    id: str

    async def inspect(self, template: str) -> str:
        return await docker("inspect", "-f", template, self.id)

    async def state(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(await self.inspect("{{json .State}}"))
        return loaded

    async def exec(self, *command: str, user: str | None = None) -> str:
        as_user = ["-u", user] if user else []
        return await docker("exec", *as_user, self.id, *command)

    async def logs(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            "docker", "logs", self.id, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return out.decode(errors="replace")

    async def wait_healthy(self, within: float) -> None:
        async with asyncio.timeout(within):
            while (health := await self.inspect("{{.State.Health.Status}}")) != "healthy":
                assert health in {"starting", "healthy"}, health
                await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def container(image: str, *options: str, env: dict[str, str]) -> AsyncIterator[Container]:
    """A detached container on the host's network, removed (with its logs shown) at the end."""
    name = f"pagecast-test-{uuid.uuid4().hex[:8]}"
    variables = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    # Health is checked every second here (30 s in the image) so "healthy" comes quickly.
    run = ["run", "-d", "--name", name, "--network", "host", "--health-interval", "1s"]
    cid = await docker(*run, *options, *variables, image)
    running = Container(cid)
    try:
        yield running
    finally:
        print(await running.logs())  # shown by pytest when the test failed
        await docker("rm", "-f", cid, check=False)


async def sandboxed_renderers(running: Container) -> list[str]:
    """NSpid lines of Chromium's renderers (more than one number: a PID namespace of its own),
    then every process with its user."""
    script = (
        # [c]: the pattern must not match this shell's own command line.
        'for p in $(pgrep -f -- "[c]hromium.*--type=renderer"); do grep NSpid /proc/$p/status; '
        'done; ps -eo user:12,args | grep -v "ps -eo"'
    )
    return (await running.exec("sh", "-c", script)).splitlines()
