"""Stores: the plug-in interface every backend keeps, and the registry that finds them.

* :mod:`~envwrap.backends.contract`: :class:`Backend` (the contract, with what
  each method is for), :class:`Fetched`, :class:`Lease`;
* :mod:`~envwrap.backends.registry`: :class:`BackendRegistry` (scheme -> backend,
  reading across stores), :func:`credential_names`;
* :mod:`~envwrap.backends.fanout`: grouping by scheme and running calls side by side;
* the stores: ``file``, ``memory``, ``aws_sm`` / ``aws_ssm`` (sharing ``_aws`` and
  ``_aws_errors``), ``vault/``.

This package imports only itself, :mod:`envwrap.refs` and the leaves; a store's
code (and its SDK) is imported only when a reference names its scheme.
"""

from __future__ import annotations

from envwrap.backends.contract import Backend, Fetched, Lease
from envwrap.backends.registry import BackendRegistry, credential_names

__all__ = ["Backend", "BackendRegistry", "Fetched", "Lease", "credential_names"]
