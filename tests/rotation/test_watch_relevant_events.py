"""File-system events of other files in a watched folder do not wake the watcher.

Found while building issues 11 and 12: an ``--audit-log`` in the folder of a
``ref+file://`` secret looped -- every read wrote an audit line, whose event
woke the watcher, which read again. Auditing unchanged re-reads no more (issue
14) broke that loop; the filter keeps other files' writes from waking the
watcher at all.
"""

from __future__ import annotations

from envwrap.watch_files import RelevantPaths


def test_relevant_paths_are_the_watched_file_kubelet_entries_and_missing_folders() -> None:
    relevant = RelevantPaths({"/run/secrets/db": {"password"}, "/app": {".env"}})
    assert relevant("/run/secrets/db/password")
    assert relevant("/run/secrets/db/..data") and relevant("/run/secrets/db/..2026_12_03")
    assert relevant("/run/secrets") and relevant("/run")  # created on the way to the folder
    assert relevant("/app/.env")
    assert not relevant("/app/audit.jsonl")
    assert not relevant("/run/secrets/db/other")
    assert not relevant("/run/secrets/dbx")
