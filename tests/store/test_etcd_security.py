"""etcd over TLS (a CA and client certificates made by the test) and with authentication
(user and password from a file or the environment; the password never shows)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.store import StoreUnavailable, open_store
from tests.peers import etcd as peer
from tests.store.certs import Pki, make_pki

pytestmark = pytest.mark.peer("etcd")
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


def _cluster() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[peer.EtcdCluster]:
    if not peer.available():
        pytest.skip("etcd binary not installed")
    tls = peer.Tls(pki.ca, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key)
    with peer.etcd_cluster(tmp_path_factory.mktemp("etcd-tls"), tls=tls) as c:
        yield c


def _tls_query(pki: Pki) -> str:
    return f"?cacert={pki.ca}&cert={pki.client_cert}&key={pki.client_key}"


def test_tls_with_client_certificate(tls_cluster: peer.EtcdCluster, pki: Pki) -> None:
    url = tls_cluster.url(_cluster())
    assert url.startswith("etcds://")
    s = open_store(url + _tls_query(pki))
    try:
        token = s.change_token()
        s.write_text("resources.cfg", "vm: 100\n")
        assert s.read_text("resources.cfg") == "vm: 100\n"
        assert s.wait_for_change(token, 30) != token  # the watch runs over TLS too
        assert s.acquire_lease("ha_manager_lock", "node1", 10)
        with s.locked():
            s.queue_crm_command("migrate vm:100 node2")
        assert s.read_crm_commands() == ["migrate vm:100 node2"]
    finally:
        s.close()


def test_tls_settings_from_options_win_over_the_url(
    tls_cluster: peer.EtcdCluster, pki: Pki, tmp_path: Path
) -> None:
    opts = {"cacert": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    s = open_store(tls_cluster.url(_cluster()) + f"?cacert={tmp_path}/missing", etcd=opts)
    try:
        assert s.quorate()
    finally:
        s.close()


def test_tls_refused_without_client_certificate_or_trusted_ca(
    tls_cluster: peer.EtcdCluster, pki: Pki
) -> None:
    for query in (f"?cacert={pki.ca}", f"?cert={pki.client_cert}&key={pki.client_key}"):
        s = open_store(tls_cluster.url(_cluster()) + query + "&connect_timeout=2&read_timeout=2")
        try:
            assert not s.quorate()
            with pytest.raises(StoreUnavailable, match="etcd unreachable"):
                s.read_resources()
        finally:
            s.close()


def test_half_a_client_pair_is_a_clear_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match="certificate and key must be given together"):
        open_store(f"etcds://127.0.0.1:1/c?cert={pki.client_cert}")


# -- authentication -------------------------------------------------------------------------
def _etcdctl(url: str, *args: str) -> None:
    subprocess.run(
        ["etcdctl", f"--endpoints={url}", "--command-timeout=20s", *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peer.EtcdCluster]:
    """etcd with authentication on and a token life of 2 s (tokens expire mid-test)."""
    if not peer.available():
        pytest.skip("etcd binary not installed")
    with peer.etcd_cluster(
        tmp_path_factory.mktemp("etcd-auth"), extra_args=["--auth-token-ttl=2"]
    ) as c:
        url = c.endpoints[0]
        _etcdctl(url, "user", "add", "root", "--interactive=false", "--new-user-password=rootpw")
        _etcdctl(url, "role", "add", "root")
        _etcdctl(url, "user", "grant-role", "root", "root")
        _etcdctl(url, "role", "add", "hafence")
        _etcdctl(url, "role", "grant-permission", "hafence", "--prefix=true", "readwrite",
                 "/hafence/")  # fmt: skip
        _etcdctl(url, "user", "add", "hafence", "--interactive=false",
                 f"--new-user-password={PASSWORD}")  # fmt: skip
        _etcdctl(url, "user", "grant-role", "hafence", "hafence")
        _etcdctl(url, "auth", "enable")
        yield c


def _password_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "etcd.pw"
    p.write_text(text + "\n")
    p.chmod(0o600)
    return p


def test_auth_with_password_file(auth_cluster: peer.EtcdCluster, tmp_path: Path) -> None:
    pw = _password_file(tmp_path, PASSWORD)
    s = open_store(auth_cluster.url(_cluster()) + f"?user=hafence&password_file={pw}")
    try:
        assert PASSWORD not in repr(s) and PASSWORD not in repr(s.settings)  # type: ignore[attr-defined]
        token = s.change_token()
        s.write_text("groups.cfg", "")
        assert s.wait_for_change(token, 30) != token
        assert s.acquire_lease("ha_agent_node1_lock", "node1", 10)
        with s.locked():
            s.queue_crm_command("stop vm:100 0")
        time.sleep(3)  # the token expired: the client authenticates again, also to watch
        assert s.wait_for_change(token, 30) != token
        assert s.read_crm_commands() == ["stop vm:100 0"]
        assert s.lease_owner("ha_agent_node1_lock") == "node1"
    finally:
        s.close()


def test_auth_password_from_environment(
    auth_cluster: peer.EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAFENCE_ETCD_PASSWORD", PASSWORD)
    s = open_store(auth_cluster.url(_cluster()), etcd={"user": "hafence"})
    try:
        assert s.quorate()
    finally:
        s.close()


def test_wrong_password_or_no_user_is_refused_without_showing_it(
    auth_cluster: peer.EtcdCluster, tmp_path: Path
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex[:8]
    pw = _password_file(tmp_path, wrong)
    for query in (f"?user=hafence&password_file={pw}", ""):
        s = open_store(auth_cluster.url(_cluster()) + query)
        try:
            with pytest.raises(StoreUnavailable) as exc:
                s.read_resources()
            assert wrong not in str(exc.value) and PASSWORD not in str(exc.value)
            assert "authentication failed" in str(exc.value) or "user name" in str(exc.value)
        finally:
            s.close()


def test_password_never_in_the_url() -> None:
    with pytest.raises(ValueError, match="must not carry credentials"):
        open_store("etcd://hafence:pw@127.0.0.1:2379/c")
    with pytest.raises(ValueError, match="must not carry the password"):
        open_store("etcd://127.0.0.1:2379/c?user=hafence&password=pw")
