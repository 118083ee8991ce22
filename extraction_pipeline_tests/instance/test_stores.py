"""The `ObjectStore` contract on both stores a deployment can have: the local data dir, and
S3-compatible object storage (a real SeaweedFS on loopback, locks in the real Postgres)."""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.instance.stores import StoreConfigurationError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(tmp_path / "data")
    url = request.getfixturevalue("s3_data_url")
    pg_url = request.getfixturevalue("pg_url")
    return open_store(url, {"EXTRACTION_PG_URL": pg_url})


def test_objects_are_written_read_listed_and_deleted_by_name(store: ObjectStore) -> None:
    store.put("records/a/latest.json", b"{}")
    store.put("records/b/latest.json", b"[]")
    store.put("records2/c.json", b"x")
    store.put("records/a/latest.json", b'{"v": 2}')  # last writer wins

    assert store.get("records/a/latest.json") == b'{"v": 2}'
    assert sorted(store.list("records")) == ["records/a/latest.json", "records/b/latest.json"]
    assert store.exists("records2/c.json") and not store.exists("records/none.json")
    with pytest.raises(FileNotFoundError):
        store.get("records/none.json")
    store.delete("records2/c.json")
    store.delete("records2/c.json")  # gone already: nothing happens
    assert not store.exists("records2/c.json") and list(store.list("nothing")) == []
    assert store.uri("tables/x.parquet").endswith("tables/x.parquet")


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", ""])
def test_names_cannot_leave_the_store(store: ObjectStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid object name"):
        store.put(name, b"x")


def test_write_once_has_exactly_one_winner_under_a_race(store: ObjectStore) -> None:
    def create(index: int) -> bool:
        return store.put_if_absent("registry/by-sha256/abc.json", f"writer {index}".encode())

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(create, range(8)))

    assert won.count(True) == 1
    assert store.get("registry/by-sha256/abc.json") == f"writer {won.index(True)}".encode()
    assert not store.put_if_absent("registry/by-sha256/abc.json", b"late")


def test_a_lock_is_held_by_one_holder_at_a_time(store: ObjectStore) -> None:
    inside: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def hold(index: int) -> None:
        with store.lock("tables"):
            with guard:
                if inside:
                    overlaps.append(index)
                inside.append(index)
            time.sleep(0.05)
            with guard:
                inside.remove(index)

    run_all(hold, 4)
    assert overlaps == []


def run_all(work: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_s3_credentials_stay_out_of_uris(s3_data_url: str, pg_url: str) -> None:
    store = open_store(s3_data_url, {"EXTRACTION_PG_URL": pg_url})
    uri = store.uri("tables/invoices.parquet")
    assert uri == f"{s3_data_url}/tables/invoices.parquet"
    assert "extraction-test-secret" not in uri and "extraction-test" not in uri.split("/")[2]


def test_object_storage_without_a_database_for_its_locks_is_refused() -> None:
    with pytest.raises(StoreConfigurationError, match="EXTRACTION_PG_URL"):
        open_store("s3://bucket/prefix", {})


def test_the_data_dir_and_the_inbox_may_each_be_a_folder_or_an_s3_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    on_s3 = Settings.from_env({"EXTRACTION_DATA_DIR": "s3://bucket/deployments/a/"})
    assert on_s3.data_dir == "s3://bucket/deployments/a" and on_s3.local_data_dir is None
    assert on_s3.inbox == tmp_path / "inbox"
    local = Settings.from_env({"EXTRACTION_DATA_DIR": "data"})
    assert local.data_dir == tmp_path / "data" == local.local_data_dir
    assert local.inbox == tmp_path / "data" / "inbox"
    assert local.local_inbox == local.inbox
    drop_prefix = Settings.from_env({"EXTRACTION_INBOX": "s3://bucket/drop/"})
    assert drop_prefix.inbox == "s3://bucket/drop" and drop_prefix.local_inbox is None
