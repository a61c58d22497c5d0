"""Chromium's feature switches: Playwright's, the user's and ours all survive."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.procs import chromium_browser
from support.streaming import running_backend

from agent.stream import auth, features
from agent.stream.browser import Geometry

pytestmark = pytest.mark.timeout(120)


def _switches(cmdline: str, switch: str) -> list[list[str]]:
    return [
        part.removeprefix(switch).split(",") for part in cmdline.split() if part.startswith(switch)
    ]


def test_every_feature_switch_is_folded_into_one_of_each_kind() -> None:
    args = features.merged(
        ["--foo", "--enable-features=A,B", "--disable-features=X", "--enable-features=C"],
        enable=["Ours"],
        disable=["Unseen"],
    )
    assert args[0] == "--foo"
    [enabled] = _switches(" ".join(args), features.ENABLE)
    [disabled] = _switches(" ".join(args), features.DISABLE)
    assert enabled == [*features.PLAYWRIGHT_ENABLED, "A", "B", "C", "Ours"]
    assert disabled == [*features.PLAYWRIGHT_DISABLED, "X", "Unseen"]


async def test_the_browser_keeps_playwrights_features_and_ours(tmp_path: Path) -> None:
    """Chromium reads only the last switch of each kind: it must hold what Playwright passed
    in its own (first) one. Fails when a Playwright upgrade changes its lists."""
    extra = ["--enable-features=UserChoice", "--disable-features=UserOff"]
    async with running_backend(tmp_path, browser={"extra_args": extra}) as backend:
        await backend.screens.warm(Geometry.of(backend._settings.qualities["720p"]))
        [browser] = chromium_browser()
    for switch, ours in (
        (features.ENABLE, [*auth.ORIGIN_BOUND_COOKIES, "UserChoice"]),
        (features.DISABLE, ["WebUIOmniboxPopup", "UserOff"]),
    ):
        passed = _switches(browser.cmdline, switch)
        assert len(passed) >= 2, f"Playwright passed no {switch} of its own: update features.py"
        playwrights, last = passed[0], passed[-1]
        assert set(playwrights) <= set(last), f"{switch}: Playwright's {playwrights} not kept"
        assert set(ours) <= set(last)
