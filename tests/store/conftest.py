from tests.store.etcd_peer import etcd3, etcd_url

__all__ = ["etcd3", "etcd_url"]
