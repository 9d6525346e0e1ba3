"""``fedfort keys rotate`` and ``fedfort keys encrypt``: identity keys and key files.

``keys rotate --client`` enrolls a fresh identity key with the running server and swaps the
key file; ``keys rotate --server`` creates the next server key in the server's state
directory; ``keys encrypt`` re-encrypts plain private key files under the key passphrase.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from fedfort.errors import ConfigError

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys rotate`` and ``keys encrypt`` to the ``fedfort`` sub-parsers."""
    keys = sub.add_parser("keys", help="identity keys").add_subparsers(
        dest="keys_command", required=True
    )
    rot = keys.add_parser(
        "rotate",
        help="rotate a client's or the server's identity key without stopping the federation",
        description="--client: enroll a fresh identity key for --name with the running server "
        "and swap the key file (the running client picks it up). --server: create the next "
        "server key in --out; the running server switches within a second. Old keys stop "
        "working at once.",
    )
    who = rot.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", action="store_true")
    who.add_argument("--server", action="store_true")
    rot.add_argument("--pki", required=True, help="credentials directory")
    rot.add_argument("--name", help="client id (with --client) or server certificate name")
    rot.add_argument("--config", help="federation TOML (with --client: where the server is)")
    rot.add_argument("--address", help="server host:port (with --client)")
    rot.add_argument("--state", help="client state directory (with --client)")
    rot.add_argument("--out", help="server state directory (with --server)")
    enc = keys.add_parser(
        "encrypt",
        help="encrypt existing plain private key files under FEDFORT_KEY_PASSPHRASE",
        description="Rewrite each plain PKCS#8 key file (identity, audit, TLS or CA key) "
        "encrypted under the passphrase in FEDFORT_KEY_PASSPHRASE or FEDFORT_KEY_PASSPHRASE_FILE "
        "(see docs/key-custody.md). Already encrypted files are left as they are.",
    )
    enc.add_argument("paths", nargs="+", help="key files")


def _encrypt_keys(paths: list[str]) -> int:
    """``fedfort keys encrypt``: re-encrypt plain key files in place (atomic, mode 0600)."""
    from fedfort.crypto.keyfiles import (
        KeyProtection,
        load_private_pem,
        private_pem,
        write_private_file,
    )

    protection = KeyProtection.from_env()
    if protection.passphrase is None:
        raise ConfigError(
            "keys encrypt needs a passphrase: set FEDFORT_KEY_PASSPHRASE or "
            "FEDFORT_KEY_PASSPHRASE_FILE"
        )
    reading = dataclasses.replace(protection, allow_plaintext=True)
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"key file {path} does not exist")
        if b"ENCRYPTED PRIVATE KEY" in path.read_bytes():
            print(f"{path}: already encrypted")
            continue
        key = load_private_pem(path, reading)
        write_private_file(path, private_pem(key, protection))
        print(f"{path}: encrypted")
    return 0


def run(args: argparse.Namespace) -> int:
    """``fedfort keys rotate`` and ``fedfort keys encrypt``."""
    if args.keys_command == "encrypt":
        return _encrypt_keys(args.paths)
    from fedfort.cli.network import server_address
    from fedfort.config import load_config
    from fedfort.transport.client import rotate_client_key
    from fedfort.transport.registry import Registry
    from fedfort.transport.server import REGISTRY_FILE, Credentials
    from fedfort.transport.service import rotate_server_key

    if args.client:
        if not args.name or not args.config:
            raise ConfigError("keys rotate --client needs --name and --config")
        config = load_config(args.config)
        credentials = Credentials.from_pki(args.pki, args.name)
        version = rotate_client_key(
            server_address(config, args.address),
            credentials,
            args.name,
            args.state or Path("runs/clients") / args.name,
            config.network,
        )
        print(f"{args.name}: identity key rotated to version {version}")
        return 0
    if not args.out:
        raise ConfigError("keys rotate --server needs --out (the server's state directory)")
    name = args.name or "server"
    credentials = Credentials.from_pki(args.pki, name, role="server")
    registry_path = Path(args.out) / REGISTRY_FILE
    if not registry_path.exists():
        raise ConfigError(f"{registry_path} does not exist: is --out the server's directory?")
    registry = Registry(registry_path)
    try:
        version = rotate_server_key(
            Path(args.out), registry, credentials.federation_id, credentials.cert, credentials.key
        )
    finally:
        registry.close()
    print(f"server identity key rotated to version {version}", file=sys.stdout)
    return 0
