"""Keywords passed through as a TypedDict are checked at run time: a misspelt one is refused
(TypeError, as for a plain signature), never dropped."""

from __future__ import annotations

from typing import Any, cast

import pytest

from producers.api import SessionsClient
from schema.keywords import check_keywords
from schema.settings import Settings
from workers.crypto.keys import KeyProvider
from workers.crypto.user_keys import rotate_root


def test_a_misspelt_keyword_is_refused() -> None:
    from producers.api import NewSession

    fields = {"owner_id": "alice", "label": "Mail", "start_url": "https://mail.example/"}
    check_keywords(NewSession, {**fields, "extra_origins": []}, call="add_session()")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments: extra_origin$"):
        check_keywords(NewSession, {**fields, "extra_origin": []}, call="add_session()")


def _client() -> SessionsClient:
    """A client whose database and broker are never reached: the check comes first."""
    none = cast(Any, None)
    return SessionsClient(settings=Settings(), db=none, enqueuer=none, audit=none)


async def test_the_producers_api_refuses_a_misspelt_keyword_before_any_work() -> None:
    client = cast(Any, _client())
    site = {"owner_id": "alice", "label": "Mail", "start_url": "https://mail.example/"}
    with pytest.raises(TypeError, match="add_session"):
        await client.add_session(**site, login_url_patern="https://mail.example/login**")
    with pytest.raises(TypeError, match="start_import"):
        await client.start_import(state=b"{}", **site, extra_origin=["https://x.example"])
    job = {"task_id": "t", "owner_id": "alice", "session_id": "s", "url": "https://x.example/"}
    with pytest.raises(TypeError, match="enqueue_browse"):
        await client.enqueue_browse(**job, option=None)


async def test_a_root_key_operation_refuses_a_misspelt_operator() -> None:
    with pytest.raises(TypeError, match="root key operation"):
        await rotate_root(cast(Any, None), cast(KeyProvider, None), actor="alice")  # type: ignore[call-arg]
