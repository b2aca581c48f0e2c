"""Weights URLs as mmpipe records and keys them: without a signed URL's credentials.

Torch-free, so that planning (:func:`mmpipe.params.weights_fingerprint`) can key a URL
without importing torch, and :mod:`mmpipe.encoders.weights` records the same form.
"""

from __future__ import annotations

from urllib.parse import urlparse

# a signed URL's credentials and expiry, new each time one is issued (S3's X-Amz-*,
# Google Cloud's X-Goog-*, Azure's SAS sig/se/st/sp/sv/sr/spr and its user-delegation
# key's sk*, CloudFront's Signature/Expires/Key-Pair-Id/Policy): they name no file, and
# provenance keeps them out (a store's attributes are no place for a credential)
_CREDENTIAL_KEYS = frozenset({"sig", "se", "st", "sp", "sv", "sr", "spr", "skoid", "sktid",
                              "skt", "ske", "sks", "skv", "signature", "expires",
                              "key-pair-id", "policy", "token", "awsaccesskeyid"})
# and a download request (Zenodo's ?download=1, Dropbox's ?dl=1); any other key can name
# the file itself (Google Drive's ?id=)
_DOWNLOAD_KEYS = frozenset({"download", "dl"})


def _credential(key: str) -> bool:
    key = key.lower()
    return key in _CREDENTIAL_KEYS or key.startswith(("x-amz-", "x-goog-"))


def _query_pairs(url: str) -> list[tuple[str, str]]:
    """The query of ``url`` as (key, value) pairs, a signed URL's credentials left out."""
    from urllib.parse import parse_qsl

    return [(k, v) for k, v in parse_qsl(urlparse(url).query, keep_blank_values=True)
            if not _credential(k)]


def without_credentials(url: str) -> str:
    """``url`` without a signed URL's credentials and expiry (what mmpipe records)."""
    from urllib.parse import urlencode

    parts = urlparse(url)
    return parts._replace(query=urlencode(_query_pairs(url))).geturl() if parts.query else url


def file_url(url: str) -> str:
    """``url`` without its fragment and the query keys that name no file (credentials,
    a download request), the rest in one order: what a weights URL is known by."""
    from urllib.parse import urlencode

    kept = sorted((k, v) for k, v in _query_pairs(url) if k.lower() not in _DOWNLOAD_KEYS)
    return urlparse(url)._replace(query=urlencode(kept), fragment="").geturl()
