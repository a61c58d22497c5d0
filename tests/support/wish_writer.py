"""A process that writes wishes as fast as it can, for the kill -9 test (tests/test_wish.py).

``python tests/support/wish_writer.py DIR NODE START``: writes wishes numbered START, START+1...
to DIR through agent.wish.WishFile, printing each number on stdout once its write returned.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.supervisor.session import StreamRequest
from agent.supervisor.supervisor import Wish
from agent.wish import WishFile, to_json


def wish_number(number: int) -> Wish:
    # Long enough that a write spans several pages, so a torn file would be visible.
    url = f"http://example.test/{number}?pad={'x' * 9000}"
    ends = datetime(2030, 1, 1, tzinfo=UTC)
    return Wish(f"s{number}", StreamRequest(url, "720p", duration_s=float(number)), ends)


def main() -> int:
    directory, node, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    file = WishFile(directory, node)
    number = start
    while True:
        file.write(to_json(wish_number(number)))
        sys.stdout.write(f"{number}\n")
        sys.stdout.flush()
        number += 1


if __name__ == "__main__":
    raise SystemExit(main())
