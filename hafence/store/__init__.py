"""hafence.store: cluster state (config, status, CRM commands, lease locks).

``open_store()`` picks the backend: an etcd URL (``etcd://host:2379/cluster``,
``etcds://`` for TLS, settings as query parameters: :mod:`hafence.store.options`) gives an
``EtcdStore``; anything else is a directory for the ``EmbeddedStore`` (default
``$HAFENCE_HA_DIR``, else ``/etc/hafence/ha``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from hafence.store.base import LockLost, LockTimeout, Store, StoreFull, StoreUnavailable
from hafence.store.embedded import EmbeddedStore, NotLocal, default_dir

__all__ = [
    "EmbeddedStore",
    "LockLost",
    "LockTimeout",
    "NotLocal",
    "Store",
    "StoreFull",
    "StoreUnavailable",
    "default_dir",
    "is_etcd_url",
    "open_store",
]


def is_etcd_url(spec: str | os.PathLike[str] | None) -> bool:
    return spec is not None and str(spec).split("://", 1)[0] in ("etcd", "etcds", "http", "https")


def open_store(
    spec: str | os.PathLike[str] | None = None,
    *,
    cluster: str | None = None,
    clock: Callable[[], float] = time.time,
    etcd: dict[str, Any] | None = None,
) -> Store:
    """A store from a directory path or an etcd URL (``etcd://``, ``etcds://``, ``http://``).

    ``etcd`` overrides the URL's settings (TLS files, user, password file), as the
    command-line options give them (:func:`hafence.store.options.etcd_overrides`).
    """
    if spec is not None and is_etcd_url(spec):
        from hafence.store.etcd import DEFAULT_CLUSTER, EtcdStore, parse_etcd_url
        from hafence.store.options import settings_from, split_query

        url, query = split_query(str(spec))
        endpoints, url_cluster = parse_etcd_url(url)
        settings = settings_from(query, etcd)
        return EtcdStore(endpoints, cluster or url_cluster or DEFAULT_CLUSTER, settings=settings)
    return EmbeddedStore(spec, clock=clock)
