"""The device and the page each say when the screen is dark; the status hears one reason."""

from __future__ import annotations

from support.listener import RecordingListener

from agent.stream.waiting import WaitingReasons


async def test_the_most_telling_reason_wins_and_none_only_when_all_are_clear() -> None:
    listener = RecordingListener()
    reasons = WaitingReasons(listener)
    cast, page = reasons.part("cast"), reasons.part("page")

    page.set_waiting("page_unreachable")
    cast.set_waiting("device_away")
    page.set_waiting(None)  # the page is back, but the TV is still off
    cast.set_waiting("device_away")  # said again: nothing new to report
    page.set_waiting("page_unreachable")
    cast.set_waiting(None)
    page.set_waiting(None)

    assert listener.waiting == ["page_unreachable", "device_away", "page_unreachable", None]


async def test_everything_else_passes_through() -> None:
    listener = RecordingListener()
    page = WaitingReasons(listener).part("page")
    page.set_title("t")
    page.set_stream_url("u")
    page.set_player(player_state="PLAYING", device="TV")
    page.ended(None, "done")
    assert (listener.titles, listener.stream_urls, listener.player_states) == (
        ["t"],
        ["u"],
        ["PLAYING"],
    )
    assert listener.endings == [(None, "done")]
