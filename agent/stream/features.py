"""Chromium's feature switches: one ``--enable-features`` and one ``--disable-features``.

Chromium honours only the last of each switch, and Playwright passes its own lists before our
arguments: the switches we pass last must carry Playwright's entries, the user's
(``browser.extra_args``) and ours, or one silently undoes the other. Playwright's entries are
mirrored here; tests/test_features.py compares them with what the installed driver passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

ENABLE = "--enable-features="
DISABLE = "--disable-features="

PLAYWRIGHT_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    # Its request interception (our auth headers) needs this one off.
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)
PLAYWRIGHT_ENABLED = ("CDPScreenshotNewSurface", "SkipListAccountsWithoutGaiaCookies")


def merged(args: Sequence[str], *, enable: Iterable[str], disable: Iterable[str]) -> list[str]:
    """``args`` with every feature switch folded into one of each kind, Playwright's first."""
    result = [arg for arg in args if not arg.startswith((ENABLE, DISABLE))]
    for switch, playwright, ours in (
        (ENABLE, PLAYWRIGHT_ENABLED, tuple(enable)),
        (DISABLE, PLAYWRIGHT_DISABLED, tuple(disable)),
    ):
        users = [
            feature
            for arg in args
            if arg.startswith(switch)
            for feature in arg.removeprefix(switch).split(",")
            if feature
        ]
        result.append(switch + ",".join(dict.fromkeys([*playwright, *users, *ours])))
    return result
