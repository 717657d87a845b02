"""The writer lock, in process: flock is per open file, so a second take in one process is refused too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sidecar.scripts.lock import LOCK_NAME, Busy, WriterLock


def test_second_take_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = WriterLock.take(tmp_path / "root", "run", "pod-a")
    with pytest.raises(Busy) as caught:
        WriterLock.take(tmp_path / "root", "seed", "pod-b")
    assert caught.value.holder.startswith("pid ") and "on pod-a, run started 20" in caught.value.holder
    first.release()
    WriterLock.take(tmp_path / "root", "seed", "pod-b").release()


@pytest.mark.parametrize("content", ["", "not json", '{"pid": "x"}', '{"pid": 1}', "[1, 2]"])
def test_an_odd_lock_file_still_gives_one_line(tmp_path: Path, content: str) -> None:
    held = WriterLock.take(tmp_path, "run")
    (tmp_path / LOCK_NAME).write_text(content)
    with pytest.raises(Busy) as caught:
        WriterLock.take(tmp_path, "seed")
    assert caught.value.holder == "holder unknown (it has not written its name yet)"
    held.release()


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError):
        WriterLock.take(tmp_path / "root", "run")
    assert target.read_text() == "precious\n"


def test_a_removed_root_is_noticed_and_the_lock_taken_again(tmp_path: Path) -> None:
    held = WriterLock.take(tmp_path / "root", "run", "pod-a")
    assert held.still_ours()
    shutil.rmtree(tmp_path / "root")
    assert not held.still_ours()
    renewed = held.renew()
    assert renewed.still_ours() and held.fd == -1
    with pytest.raises(Busy):
        WriterLock.take(tmp_path / "root", "seed")
    renewed.release()
