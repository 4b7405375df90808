"""Shared query parameters for paged lists (page_size 1..100, else 400 InvalidParameter)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_PAGE_NO = 10_000_000
MAX_PAGE_SIZE = 100

PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE_NO)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
