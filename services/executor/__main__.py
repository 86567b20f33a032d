"""`python -m squall.services.executor` (also `squall executor`)."""

from __future__ import annotations

from squall.common.service_cli import SERVICES

if __name__ == "__main__":
    raise SystemExit(SERVICES["executor"].main())
