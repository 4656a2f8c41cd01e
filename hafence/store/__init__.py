"""hafence.store: cluster state (config, status, CRM commands, lease locks).

``open_store()`` picks the backend: an etcd URL (``etcd://host:2379/cluster``) gives an
``EtcdStore``; anything else is a directory for the ``EmbeddedStore`` (default
``$HAFENCE_HA_DIR``, else ``/etc/hafence/ha``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from hafence.store.base import LockTimeout, Store, StoreUnavailable
from hafence.store.embedded import EmbeddedStore, default_dir

__all__ = [
    "EmbeddedStore",
    "LockTimeout",
    "Store",
    "StoreUnavailable",
    "default_dir",
    "open_store",
]


def open_store(
    spec: str | os.PathLike[str] | None = None,
    *,
    cluster: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Store:
    """A store from a directory path or an etcd URL (``etcd://``, ``http://``)."""
    if spec is not None and str(spec).split("://", 1)[0] in ("etcd", "etcds", "http", "https"):
        from hafence.store.etcd import DEFAULT_CLUSTER, EtcdStore, parse_etcd_url

        endpoints, url_cluster = parse_etcd_url(str(spec))
        return EtcdStore(endpoints, cluster or url_cluster or DEFAULT_CLUSTER)
    return EmbeddedStore(spec, clock=clock)
