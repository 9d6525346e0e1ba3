"""Key custody: encrypted PKCS#8 at rest, owner-only files, and the key stores (file, PKCS#11)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fedfort.audit import AUDIT_KEY_FILE, run_audit_key
from fedfort.crypto import pki
from fedfort.crypto.keyfiles import (
    ALLOW_PLAINTEXT_ENV,
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    KeyProtection,
    load_signing_key,
    save_signing_key,
)
from fedfort.crypto.keystore import FileKeyStore, open_keystore
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import ConfigError

SECRET = b"correct horse battery staple"
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, ALLOW_PLAINTEXT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FEDFORT_PKCS11_MODULE", raising=False)


def _raw(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_encrypted_key_loads_with_its_passphrase_only(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    key = SigningKey()
    save_signing_key(key, path, KeyProtection(SECRET))
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _raw(key) not in data and key.private_bytes() not in data
    assert path.stat().st_mode & 0o777 == 0o600

    loaded = load_signing_key(path, KeyProtection(SECRET))
    assert loaded.public == key.public
    assert verify(key.public, loaded.sign(b"m"), b"m")

    with pytest.raises(ConfigError, match=f"is encrypted: give its passphrase in {PASSPHRASE_ENV}"):
        load_signing_key(path, KeyProtection())
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_signing_key(path, KeyProtection(b"not the passphrase"))


def test_passphrase_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileKeyStore(tmp_path)
    monkeypatch.setenv(PASSPHRASE_ENV, SECRET.decode())
    key = store.generate("audit")
    assert b"ENCRYPTED" in store.path("audit").read_bytes()
    assert store.get("audit").public == key.public
    assert store.list() == ["audit"]
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        store.get("audit")
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match="is encrypted"):
        store.get("audit")


def test_passphrase_file_must_be_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o640)
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    with pytest.raises(ConfigError, match=f"chmod 600 {secret}"):
        KeyProtection.from_env()
    secret.chmod(0o600)
    protection = KeyProtection.from_env()
    assert protection.passphrase == SECRET  # the trailing newline is not part of it
    assert "correct" not in repr(protection)
    monkeypatch.setenv(PASSPHRASE_ENV, "x")
    with pytest.raises(ConfigError, match="keep only one"):
        KeyProtection.from_env()


def test_world_readable_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    key = SigningKey()
    save_signing_key(key, path, KeyProtection(SECRET))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"mode 0644.*Fix it with: chmod 600 {path}"):
        load_signing_key(path, KeyProtection(SECRET))
    path.chmod(0o604)  # others only
    with pytest.raises(ConfigError, match="chmod 600"):
        load_signing_key(path, KeyProtection(SECRET))
    path.chmod(0o600)
    assert load_signing_key(path, KeyProtection(SECRET)).public == key.public


def test_plain_keys_are_refused_once_a_passphrase_is_set(tmp_path: Path) -> None:
    path = tmp_path / "old.key"
    key = SigningKey()
    save_signing_key(key, path, KeyProtection())
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_signing_key(path, KeyProtection()).public == key.public  # no passphrase: loads
    with pytest.raises(ConfigError, match=f"not encrypted.*{ALLOW_PLAINTEXT_ENV}=1"):
        load_signing_key(path, KeyProtection(SECRET, allow_plaintext=False))
    allowed = KeyProtection.from_env({PASSPHRASE_ENV: "s", ALLOW_PLAINTEXT_ENV: "1"})
    assert load_signing_key(path, allowed).public == key.public
    with pytest.raises(ConfigError, match="empty"):
        KeyProtection.from_env({PASSPHRASE_ENV: ""})


def test_bad_names_and_missing_keys(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    assert store.list() == []
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ConfigError, match="invalid key name"):
            store.get(bad)
    with pytest.raises(ConfigError, match="no key 'absent'"):
        store.get("absent")
    assert store.get_or_generate("k").public == store.get("k").public
    store.delete("k")
    assert store.list() == []


def test_tls_and_audit_keys_are_encrypted_at_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, SECRET.decode())
    ca = pki.init_ca(tmp_path / "ca", "fed-test")
    issued = pki.issue_certificate(ca.directory, tmp_path / "pki", "client-000", role="client")
    for key_file in (ca.key, issued.key):
        assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert key_file.stat().st_mode & 0o777 == 0o600
    # gRPC needs the PEM bytes: decrypted in memory, matching the certificate
    pem = pki.tls_key_pem(issued.key)
    plain = serialization.load_pem_private_key(pem, password=None)
    assert plain.public_key() == pki.load_certificate(issued.cert).public_key()
    assert not any(b"BEGIN PRIVATE KEY" in p.read_bytes() for p in (tmp_path / "pki").iterdir())

    run = tmp_path / "run"
    audit = run_audit_key(run)
    assert (run / AUDIT_KEY_FILE).read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    assert run_audit_key(run).public == audit.public
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match="is encrypted"):
        pki.load_private_key(issued.key)
    with pytest.raises(ConfigError, match="is encrypted"):
        run_audit_key(run)


def test_cli_encrypts_plain_keys_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedfort.cli import main

    path = tmp_path / "identity.key"
    key = SigningKey()
    save_signing_key(key, path, KeyProtection())
    assert main(["keys", "encrypt", str(path)]) == 2  # no passphrase: refused, file unchanged
    assert "needs a passphrase" in capsys.readouterr().err
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    monkeypatch.setenv(PASSPHRASE_ENV, SECRET.decode())
    assert main(["keys", "encrypt", str(path)]) == 0
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signing_key(path).public == key.public
    assert main(["keys", "encrypt", str(path)]) == 0
    assert "already encrypted" in capsys.readouterr().out


# --- PKCS#11 (SoftHSM2) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SoftHSM2 token for the module (the library reads its config once per process);
    fails (never skips) when SoftHSM2 is missing."""
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM_MODULE.exists():
        pytest.fail("SoftHSM2 is missing: run `apt-get install softhsm2` (Debian), then rerun")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", "fedfort", "--pin", "1234", "--so-pin", "9876"],
        check=True,
        capture_output=True,
    )
    yield conf
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture
def softhsm(softhsm_token: Path, tmp_path: Path) -> dict[str, str]:
    """The token's environment, with a key-label prefix of this test's own."""
    return {
        "FEDFORT_PKCS11_MODULE": str(SOFTHSM_MODULE),
        "FEDFORT_PKCS11_TOKEN": "fedfort",
        "FEDFORT_PKCS11_PIN": "1234",
        "FEDFORT_PKCS11_LABEL_PREFIX": f"{tmp_path.name}:",
    }


def test_pkcs11_keys_sign_on_the_token_and_never_leave_it(
    softhsm: dict[str, str], tmp_path: Path
) -> None:
    from fedfort.crypto.keystore.pkcs11_store import Pkcs11KeyStore

    store = open_keystore(tmp_path, environ=softhsm)
    assert isinstance(store, Pkcs11KeyStore)
    key = store.generate("audit-key")
    assert store.list() == ["audit-key"]
    signature = key.sign(b"round 7")
    assert verify(key.public, signature, b"round 7")  # Ed25519 made on the token (CKM_EDDSA)
    assert not verify(key.public, signature, b"round 8")
    assert store.get("audit-key").public == key.public
    with pytest.raises(ConfigError, match="cannot be exported"):
        key.private_bytes()
    assert not list(tmp_path.glob("*.key"))  # nothing written to disk

    # a software key moved onto the token signs the same; then only the token holds it
    soft = SigningKey()
    store.put("identity", soft)
    moved = store.get("identity")
    assert moved.public == soft.public and verify(soft.public, moved.sign(b"x"), b"x")
    assert store.list() == ["audit-key", "identity"]
    store.delete("identity")
    assert store.list() == ["audit-key"]
    with pytest.raises(ConfigError, match="no key pair"):
        store.get("identity")

    # a second store of the process shares the login; after logout a wrong PIN is refused
    again = Pkcs11KeyStore(SOFTHSM_MODULE, "fedfort", "1234", label_prefix=store.label_prefix)
    assert again.get("audit-key").public == key.public
    again.close()
    store.close()
    with pytest.raises(ConfigError, match="wrong PIN"):
        Pkcs11KeyStore(SOFTHSM_MODULE, "fedfort", "0000")
    with pytest.raises(ConfigError, match="no PKCS#11 token"):
        Pkcs11KeyStore(SOFTHSM_MODULE, "absent", "1234")


def test_a_run_signs_its_audit_log_on_the_token(
    softhsm: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import tiny_config
    from fedfort import Simulation
    from fedfort.audit import AUDIT_PUBLIC_KEY_FILE, verify_run

    for name, value in softhsm.items():
        monkeypatch.setenv(name, value)
    cfg = tiny_config(rounds=2, clients={"count": 4, "lr": 0.1})
    with Simulation(cfg, tmp_path / "run") as sim:
        sim.run()
    assert not (tmp_path / "run" / AUDIT_KEY_FILE).exists()  # the key stayed on the token
    result = verify_run(tmp_path / "run")
    assert result.ok and result.entries > 2
    on_token = open_keystore(tmp_path, environ=softhsm).get("audit-key")
    pub = (tmp_path / "run" / AUDIT_PUBLIC_KEY_FILE).read_text().strip()
    assert on_token.public.hex() == pub
