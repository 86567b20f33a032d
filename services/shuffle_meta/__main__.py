"""`python -m squall.services.shuffle_meta` (also `squall shuffle-meta`)."""

from __future__ import annotations

from squall.common.service_cli import SERVICES

if __name__ == "__main__":
    raise SystemExit(SERVICES["shuffle_meta"].main())
