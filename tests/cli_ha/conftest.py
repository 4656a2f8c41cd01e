from tests.store.etcd_peer import etcd_url

__all__ = ["etcd_url"]
