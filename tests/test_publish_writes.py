"""Writing a publish's files: each replaced whole, flushed in batches, renamed last; nothing
left behind by a failed publish, and the leftovers of a killed one removed later."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

import aggregator.publish as publishing
from aggregator.errors import AggregatorError
from aggregator.publish import STALE_TEMP_SECONDS, SiteData, StagedWrites, render_site
from aggregator.settings import Settings
from tests.test_publish import NOW, TEMPLATES, make_settings, run_publish, site_data


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def reordered() -> SiteData:
    """The sample site with its stories in another order: every feed's bytes change."""
    stories = list(site_data().topic)
    return site_data([*stories[1:], stories[0]])


def changed_files(
    public: Path, before: dict[str, bytes], site: SiteData, settings: Settings
) -> int:
    """How many files hold `site`'s bytes instead of `before`'s; each must hold one or the other."""
    after = render_site(site, settings=settings, now=NOW, templates_dir=TEMPLATES)
    changed = 0
    for name, old in before.items():
        data = (public / name).read_bytes() if (public / name).is_file() else None
        assert data in (old, after.get(name)), name
        changed += data != old
    return changed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def test_staged_files_are_written_flushed_in_batches_and_renamed_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publishing, "FLUSH_BATCH", 2)
    flushed: list[str] = []
    fsync_file = publishing._fsync_file

    def recording(name: str) -> None:
        flushed.append(Path(name).name)
        fsync_file(name)

    monkeypatch.setattr(publishing, "_fsync_file", recording)
    (tmp_path / "same.txt").write_bytes(b"same")
    (tmp_path / "changed.txt").write_bytes(b"old")
    files = {"same.txt": b"same", "changed.txt": b"new", "sub/new.txt": b"fresh", "x.txt": b"x"}

    with StagedWrites() as writes:
        for name, data in files.items():
            writes.stage(tmp_path / name, data)
        assert (tmp_path / "changed.txt").read_bytes() == b"old"  # nothing replaced yet
        written, unchanged = writes.commit()

    assert unchanged == [tmp_path / "same.txt"]
    assert written == [tmp_path / n for n in ("changed.txt", "sub/new.txt", "x.txt")]
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
    assert len(flushed) == 3 and all(n.endswith(".tmp") for n in flushed)
    assert stat.S_IMODE((tmp_path / "sub/new.txt").stat().st_mode) == 0o644
    assert temporaries(tmp_path) == []


def test_a_publish_failing_while_writing_replaces_nothing_and_leaves_no_temporary_files(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    before = {p.relative_to(public).as_posix(): p.read_bytes() for p in public.rglob("*.*")}
    (public / "index.html").unlink()
    (public / "index.html").mkdir()  # writing it fails: before anything is renamed
    del before["index.html"]

    with pytest.raises(AggregatorError, match="cannot write"):
        run_publish(reordered(), settings, public)

    assert temporaries(public) == []
    assert changed_files(public, before, reordered(), settings) == 0


def test_a_rename_failing_midway_leaves_each_file_old_or_new_and_no_temporary_ones(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    before = {p.relative_to(public).as_posix(): p.read_bytes() for p in public.rglob("*.*")}
    renames = 0
    replace = os.replace

    def failing(source: str, target: Path) -> None:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise OSError(28, "No space left on device", str(target))
        replace(source, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(AggregatorError, match="No space left"):
        run_publish(reordered(), settings, public)
    monkeypatch.undo()

    assert temporaries(public) == []
    assert changed_files(public, before, reordered(), settings) == 2  # renamed before it failed


def test_temporary_files_of_a_killed_publish_are_removed_once_stale(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    stale = public / "tags" / ".official.atom.k1ll3d.tmp"
    fresh = public / ".feed.atom.running.tmp"  # perhaps another publish's, right now
    kept = public / ".notes.txt"
    for path in (stale, fresh, kept):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(kept, (old, old))

    run_publish(site_data(), settings, public)

    assert not stale.exists()
    assert fresh.exists() and kept.exists()
