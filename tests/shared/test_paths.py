"""annrepro.paths: where the cache and the data roots are."""

from pathlib import Path

from annrepro.paths import cache_dir, data_roots


def test_cache_dir_follows_annrepro_cache_and_holds_the_last_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("ANNREPRO_DATA", str(tmp_path / "d"))
    assert cache_dir() == tmp_path / "c"
    assert data_roots() == [tmp_path / "d", tmp_path / "c" / "data"]
    monkeypatch.delenv("ANNREPRO_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "annrepro"


def test_groundtruth_cache_dir_is_the_same_function():
    """Its first home was annrepro.groundtruth; code that imports it from there still works."""
    from annrepro import groundtruth

    assert groundtruth.cache_dir is cache_dir
