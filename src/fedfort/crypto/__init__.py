"""fedfort's cryptographic primitives: the one layer secure aggregation, audit and transport share.

Every module is a thin, typed wrapper over ``cryptography`` (nothing invented) and imports
nothing of fedfort but :mod:`fedfort.errors` and :mod:`fedfort.jsonio`:

- :mod:`fedfort.crypto.primitives`: Ed25519 signatures, X25519 key agreement with HKDF-SHA256,
  AES-256-GCM sealing and the AES-CTR mask PRG;
- :mod:`fedfort.crypto.keyfiles`: long-term private keys as owner-only PKCS#8 files,
  encrypted under a passphrase;
- :mod:`fedfort.crypto.keystore`: where signing keys live (files or a PKCS#11 token), behind
  one small interface;
- :mod:`fedfort.crypto.pki`: the federation's certificate authority, X.509 certificates and
  revocation lists for mutual TLS.

Protocols built from these live above them: Shamir sharing and the masking protocol in
:mod:`fedfort.secagg`, the hash-chained log in :mod:`fedfort.audit`, mTLS in
:mod:`fedfort.transport`.
"""
