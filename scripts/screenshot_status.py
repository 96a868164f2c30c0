"""Save a screenshot of a node's status page (the one in docs/status-page.md came from here).

    make demo &                                    # or any pool
    python scripts/screenshot_status.py --url http://127.0.0.1:8092 --out docs/status-page.png

The system's headless Chromium (``bash scripts/chromium-up.sh`` installs it), through selenium
(the ``test`` extra). Waits until the page shows at least ``--models`` models, then saves the
whole page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opentela.testing.browser import full_page_png, open_chromium, system_chromium, wait_until


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8092")
    ap.add_argument("--out", type=Path, default=Path("docs/status-page.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--models", type=int, default=1, help="wait until this many models show")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    found = system_chromium()
    if found is None:
        print("no chromium + chromedriver: run `bash scripts/chromium-up.sh`", file=sys.stderr)
        return 1
    with open_chromium(*found, width=args.width) as drv:
        drv.get(args.url.rstrip("/") + "/")
        wait_until(
            lambda: len(drv.find_elements("css selector", "#models tbody tr")) >= args.models,
            args.timeout,
            f"{args.models} model(s) on the page",
        )
        print(full_page_png(drv, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
