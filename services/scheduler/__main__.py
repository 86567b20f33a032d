"""`python -m squall.services.scheduler` (also `squall scheduler`)."""

from __future__ import annotations

from squall.common.service_cli import SERVICES

if __name__ == "__main__":
    raise SystemExit(SERVICES["scheduler"].main())
