"""``--cache``: the last good secrets, encrypted at rest, for a start during an outage
(docs/cache.md).

After every successful resolution and every applied rotation envwrap seals the
secrets the program runs on into ``--cache PATH``. When a store is
*unreachable* at start (the retryable errors that end in exit 69 after
``--start-timeout``), the program starts from that file instead -- if it was
written for the same references, is younger than ``--cache-max-age``, and is
where envwrap left it.

What is stored: every locator (a secret without its ``#KEY``) with the secret
as its store returned it and its version. Composing the environment from that
is exactly what a live start composes from, so a cached start differs from a
live one only in where the secrets came from; the ``.env`` files and the
process environment are read afresh either way.

A partial outage (one store down, another up) serves the *whole* set from the
cache, never a mix: the cached set is a snapshot the program already ran on,
while a mix of live and cached values may never have existed together (a user
name rotated in one store, its password cached from before in another). With
``--watch`` the live values replace it as a rotation once every store answers.

The modules, from the bottom up: :mod:`~envwrap.cache.sealed` (the file format:
key derivation, seal and open; pure), :mod:`~envwrap.cache.key` (the key
material and its file's permissions), :mod:`~envwrap.cache.fallback` (the file
on disk, and when a start uses it), :mod:`~envwrap.cache.keeper` (the observer
that keeps the file on what runs while watching). The modes use the names below.
"""

from envwrap.cache.fallback import (
    configure,
    discard_after,
    fall_back,
    remember_start,
    serving_cached,
)
from envwrap.cache.keeper import keeper

__all__ = ["configure", "discard_after", "fall_back", "keeper", "remember_start",
           "serving_cached"]
