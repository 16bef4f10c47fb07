"""Local exchange URIs: durable by default; a simulation's private one may skip fsync."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_core.errors import ConfigError, ObjectExistsError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.uri import open_store


def test_local_exchange_is_durable_unless_asked(tmp_path: Path) -> None:
    durable = open_store(tmp_path.as_uri())
    assert isinstance(durable, LocalDirectoryStore) and durable.durable
    private = open_store(f"{tmp_path.as_uri()}?durable=false")
    assert isinstance(private, LocalDirectoryStore) and not private.durable
    assert private.root == durable.root


def test_a_non_durable_store_keeps_write_once(tmp_path: Path) -> None:
    store = open_store(f"{tmp_path.as_uri()}?durable=false")
    store.put_new("a/b.json", b"1")
    with pytest.raises(ObjectExistsError):
        store.put_new("a/b.json", b"2")
    assert store.get("a/b.json") == b"1"


def test_unknown_query_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\?durable=false"):
        open_store(f"{tmp_path.as_uri()}?fast=yes")
