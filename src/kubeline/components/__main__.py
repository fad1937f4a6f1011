"""``python -m kubeline.components http_request|json_transform`` (see ``runner``)."""

from __future__ import annotations

import sys

from kubeline.components import runner

if __name__ == "__main__":
    sys.exit(runner.main(sys.argv[1:]))
