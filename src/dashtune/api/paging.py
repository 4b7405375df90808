"""Shared query parameters for paged lists (page_size 1..100, else 400 InvalidParameter)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

PageNo = Annotated[int, Query(ge=1, le=10_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
