"""Temporary files are staged in one folder under the root, never beside a listed name."""

import errno
import os
from pathlib import Path

import pytest

from fl_core.errors import ObjectExistsError
from fl_core.exchange.fs_store import STAGING_DIR, LocalDirectoryStore


def test_writes_stage_under_the_root_and_leave_nothing_behind(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "x", durable=False)
    store.put_new("f/rounds/000001/updates/site-a.safetensors", b"update")
    etag = store.replace("f/state.json", b"v1", None)
    store.replace("f/state.json", b"v2", etag)
    assert store.get("f/rounds/000001/updates/site-a.safetensors") == b"update"
    assert store.get("f/state.json") == b"v2"
    assert list((tmp_path / "x" / STAGING_DIR).iterdir()) == []  # every temporary file gone
    assert store.list_keys("") == [
        "f/rounds/000001/updates/site-a.safetensors",
        "f/state.json",
    ]
    with pytest.raises(ObjectExistsError):
        store.put_new("f/rounds/000001/updates/site-a.safetensors", b"other")
    assert list((tmp_path / "x" / STAGING_DIR).iterdir()) == []


def test_a_torn_staged_file_is_never_listed(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path, durable=False)
    store.put_new("f/a.json", b"{}")
    torn = store.staging_folder(tmp_path / "f" / "b.json") / ".x.fedsilo-tmp"
    torn.write_bytes(b"half")
    assert store.list_keys("") == ["f/a.json"]


def test_across_filesystems_it_stages_beside_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount inside the root: link from the staging folder fails with EXDEV."""
    store = LocalDirectoryStore(tmp_path, durable=False)
    staging = tmp_path / STAGING_DIR
    real_link = os.link

    def link(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(src).parent == staging:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    store.put_new("f/rounds/000002/updates/site-b.safetensors", b"bytes")
    assert store.get("f/rounds/000002/updates/site-b.safetensors") == b"bytes"
    assert store.staging_folder(tmp_path / "f" / "g.json") == tmp_path / "f"
    store.put_new("f/g.json", b"{}")  # from now on beside the name, first time right
    assert store.list_keys("f/") == ["f/g.json", "f/rounds/000002/updates/site-b.safetensors"]
    assert list(staging.iterdir()) == []
