"""mmpipe.params: what a job's params record of the files it reads."""

from __future__ import annotations

from mmpipe.params import weights_fingerprint

HUB = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def test_a_signed_weights_urls_credentials_are_no_part_of_its_fingerprint():
    """A presigned URL's signature and expiry, new each time it is issued, were the
    params: each new one reran every store on the encoder and every run on them, for the
    same file, and wrote the credential into Snakemake's records."""
    signed = ("https://bucket.s3.amazonaws.com/models/resnet50-0676ba61.pth?X-Amz-Algorithm="
              "AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE&X-Amz-Expires=3600&"
              "X-Amz-Signature={}")
    a, b = (weights_fingerprint({"weights": signed.format(s)}) for s in ("aaaa", "bbbb"))
    assert a == b == "https://bucket.s3.amazonaws.com/models/resnet50-0676ba61.pth"
    assert weights_fingerprint({"weights": HUB}) == HUB  # as before: nothing reruns
    # a query key that names the file stays (Google Drive's id)
    drive = "https://drive.google.com/uc?id=1AbC&export=download"
    assert "id=1AbC" in weights_fingerprint({"weights": drive})
    assert weights_fingerprint({"weights": drive}) != weights_fingerprint(
        {"weights": drive.replace("1AbC", "2XyZ")})
