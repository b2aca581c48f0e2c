"""Weights resolution: local files, checksums, state_dict unwrapping, loud random init."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from torch import nn

from mmpipe.encoders.weights import (
    WeightsInfo,
    build_pretrained,
    load_strict,
    resolve_state_dict,
    sha256_file,
)
from mmpipe.errors import WeightsError

ARGS = {"encoder": "toy", "expected_file": "toy-1234.pth", "how_to_get": "from the toy zoo"}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        self.head = nn.Linear(2, 3)


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # several read chunks
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert sha256_file(p, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_local_file_unwraps_state_dict_and_strips_module(tmp_path):
    src = Toy()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    p = tmp_path / "ckpt.pth"
    torch.save(wrapped, p)
    sd, info = resolve_state_dict({"weights": str(p)}, **ARGS)
    assert set(sd) == set(src.state_dict())
    assert info == WeightsInfo(str(p), sha256_file(p), False)
    dst = load_strict(Toy(), sd, encoder="toy")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_a_tensor_held_with_and_without_module_is_refused(tmp_path):
    """The file's key order chose which copy loaded: zeros under the bare name after the
    real weights under ``module.`` loaded the zeros, without a word."""
    good = Toy().state_dict()
    p = tmp_path / "twice.pth"
    torch.save({**{f"module.{k}": v for k, v in good.items()},
                **{k: torch.zeros_like(v) for k, v in good.items()}}, p)
    with pytest.raises(WeightsError, match=r"twice.pth: holds 'body.0.weight' twice, with "
                       r"and without the 'module.' prefix"):
        resolve_state_dict({"weights": str(p)}, **ARGS)


def test_model_key_is_unwrapped(tmp_path):
    p = tmp_path / "ckpt.pth"
    torch.save({"model": Toy().state_dict()}, p)
    sd, _ = resolve_state_dict({"weights": str(p)}, **ARGS)
    assert "body.0.weight" in sd


def test_sha256_mismatch_names_both_hashes_and_file(tmp_path):
    p = tmp_path / "ckpt.pth"
    torch.save(Toy().state_dict(), p)
    wrong = "0" * 64
    with pytest.raises(WeightsError) as err:
        resolve_state_dict({"weights": str(p), "sha256": wrong}, **ARGS)
    msg = str(err.value)
    assert wrong in msg and sha256_file(p) in msg and str(p) in msg


def test_sha256_match_passes(tmp_path):
    p = tmp_path / "ckpt.pth"
    torch.save(Toy().state_dict(), p)
    sd, info = resolve_state_dict({"weights": str(p), "sha256": sha256_file(p).upper()}, **ARGS)
    assert sd is not None and info.sha256 == sha256_file(p)


@pytest.mark.parametrize("weights", [None, "does/not/exist.pth"])
def test_missing_weights_error_names_the_file(weights):
    with pytest.raises(WeightsError) as err:
        resolve_state_dict({"weights": weights}, **ARGS)
    msg = str(err.value)
    assert "toy-1234.pth" in msg and "from the toy zoo" in msg
    assert "encoders.toy.weights" in msg and "allow_random_init" in msg
    assert (weights or "no weights configured") in msg


def test_a_configured_file_that_is_missing_is_an_error_even_with_random_init_allowed():
    # allow_random_init applies only when no weights are configured: a wrong path is a typo
    with pytest.raises(WeightsError, match="does/not/exist.pth"):
        resolve_state_dict({"weights": "does/not/exist.pth", "allow_random_init": True}, **ARGS)


def test_random_init_is_loud(caplog):
    with caplog.at_level(logging.WARNING):
        sd, info = resolve_state_dict({"weights": None, "allow_random_init": True}, **ARGS)
    assert sd is None
    assert info == WeightsInfo("random-init", None, True, {"init_seed": 0})
    assert info.to_attrs() == {"weights_source": "random-init", "weights_sha256": None,
                               "weights_random_init": True, "weights_init_seed": 0}
    assert any("RANDOM WEIGHTS" in r.getMessage() and "toy" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)


def test_url_without_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="download"):
        resolve_state_dict({"weights": "https://example.org/w/toy-1234.pth"}, **ARGS)


def test_url_already_in_hub_cache_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    p = tmp_path / "checkpoints" / "toy.pth"
    torch.save(Toy().state_dict(), p)
    named = p.with_name(f"toy-{sha256_file(p)[:8]}.pth")  # torch hub's hash-named file
    named.write_bytes(p.read_bytes())
    for name in (p.name, named.name):
        url = f"https://example.org/w/{name}"
        sd, info = resolve_state_dict({"weights": url}, **ARGS)
        assert sd is not None and info.source == url and info.sha256 == sha256_file(p)


def test_another_urls_file_in_the_hub_cache_is_refused(tmp_path, monkeypatch):
    """The hub cache keys a file by its name alone: a second host's (or a v2 folder's)
    file of one name was loaded from the cache and recorded as the new URL's."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    p = tmp_path / "checkpoints" / "toy-1234abcd.pth"
    torch.save(Toy().state_dict(), p)
    with pytest.raises(WeightsError, match="is not the file its name promises"):
        resolve_state_dict({"weights": "https://example.org/w/toy-1234abcd.pth"}, **ARGS)
    p = p.rename(tmp_path / "checkpoints" / "toy.pth")
    (tmp_path / "checkpoints" / "toy.pth.source-url").write_text("https://host-a.org/toy.pth\n")
    assert resolve_state_dict({"weights": "https://host-a.org/toy.pth"}, **ARGS)[0] is not None
    with pytest.raises(WeightsError, match="was downloaded from https://host-a.org/toy.pth, "
                                           "not from https://host-b.org/v2/toy.pth"):
        resolve_state_dict({"weights": "https://host-b.org/v2/toy.pth"}, **ARGS)
    # its download-only query aside, the same URL; and a pinned SHA-256 that matches
    # says it all
    assert resolve_state_dict({"weights": "https://host-a.org/toy.pth?download=1"},
                              **ARGS)[0] is not None
    # a query that names the file (Google Drive's id=) is another file, in one cache name
    (tmp_path / "checkpoints" / "uc").write_bytes(p.read_bytes())
    (tmp_path / "checkpoints" / "uc.source-url").write_text(
        "https://drive.google.com/uc?export=download&id=AAAA\n")
    with pytest.raises(WeightsError, match="was downloaded from .*id=AAAA"):
        resolve_state_dict({"weights": "https://drive.google.com/uc?export=download&id=BBBB"},
                           **ARGS)
    # the same file's keys in another order, or a signed URL issued again: the same file
    assert resolve_state_dict({"weights": "https://drive.google.com/uc?id=AAAA&export="
                                          "download"}, **ARGS)[0] is not None
    (tmp_path / "checkpoints" / "m.pth").write_bytes(p.read_bytes())
    (tmp_path / "checkpoints" / "m.pth.source-url").write_text(
        "https://b.s3.amazonaws.com/m.pth?X-Amz-Date=1&X-Amz-Signature=aaa\n")
    sd, info = resolve_state_dict({"weights": "https://b.s3.amazonaws.com/m.pth?X-Amz-Date=2&"
                                              "X-Amz-Signature=bbb"}, **ARGS)
    assert sd is not None and info.source == "https://b.s3.amazonaws.com/m.pth"  # no credential
    (tmp_path / "checkpoints" / "m.pth.source-url").write_text(
        "https://a.blob.core.windows.net/c/m.pth?skt=1&ske=2&sig=aaa\n")  # Azure, user key
    assert resolve_state_dict({"weights": "https://a.blob.core.windows.net/c/m.pth?skt=3&ske=4"
                                          "&sig=bbb"}, **ARGS)[0] is not None
    pinned = {"weights": "https://host-b.org/v2/toy.pth", "sha256": sha256_file(p)}
    assert resolve_state_dict(pinned, **ARGS)[0] is not None


def test_corrupt_file_is_a_weights_error(tmp_path):
    p = tmp_path / "ckpt.pth"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        resolve_state_dict({"weights": str(p)}, **ARGS)
    # a git-lfs pointer in the model's place (a repository cloned without git-lfs) is no
    # torch file, not a pickle of code
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(WeightsError, match=r"cannot read the weights file: not a file torch "
                                           r"saved \(Unsupported operand"):
        resolve_state_dict({"weights": str(p)}, **ARGS)
    # text that starts with "c" reads as a pickle's GLOBAL opcode: still no code
    p.write_text("curl: (22) The requested URL returned error: 403\n")
    with pytest.raises(WeightsError, match=r"cannot read the weights file: not a file torch "
                                           r"saved \(Unsupported global: GLOBAL url"):
        resolve_state_dict({"weights": str(p)}, **ARGS)


def test_a_checkpoint_that_pickles_code_is_refused_without_unsafe_advice(tmp_path):
    """torch's refusal advised loading the file with weights_only=False, which runs its
    code, in terminal colour codes; the error quoted it whole."""
    p = tmp_path / "ckpt.pth"
    torch.save({"conv.weight": torch.ones(2), "hook": print}, p)
    with pytest.raises(WeightsError, match=r"cannot read the weights file: the file pickles "
                                           r"more than tensors \(Unsupported global: GLOBAL "
                                           r"print was not an allowed global by "
                                           r"default\)") as err:
        resolve_state_dict({"weights": str(p)}, **ARGS)
    assert "weights_only=False" not in str(err.value) and "\x1b" not in str(err.value)


def test_load_strict_reports_missing_and_unexpected_keys():
    sd = {k: v for k, v in Toy().state_dict().items() if not k.startswith("head.")}
    sd["classifier.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError) as err:
        load_strict(Toy(), sd, encoder="toy")
    assert "head.weight" in str(err.value) and "classifier.weight" in str(err.value)


def test_load_strict_drops_prefixes(caplog):
    src = Toy()
    sd = dict(src.state_dict())
    sd["classifier.weight"] = torch.zeros(3)
    sd["classifier.bias"] = torch.zeros(3)
    dst = Toy()
    with caplog.at_level(logging.INFO):
        load_strict(dst, sd, drop_prefixes=("classifier.",), encoder="toy")
    assert torch.equal(dst.head.weight, src.head.weight)
    assert any("dropped 2" in r.getMessage() for r in caplog.records)


def test_load_strict_reports_shape_mismatch():
    sd = Toy().state_dict()
    sd["head.weight"] = torch.zeros(4, 2)
    with pytest.raises(WeightsError, match="head.weight"):
        load_strict(Toy(), sd, encoder="toy")


def test_checkpoint_without_num_batches_tracked_loads(tmp_path):
    # checkpoints saved by PyTorch < 0.4.1 (MedicalNet's era) lack num_batches_tracked
    src = Toy()
    p = tmp_path / "old.pth"
    torch.save({k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}, p)
    sd, _ = resolve_state_dict({"weights": str(p)}, **ARGS)
    load_strict(Toy(), sd, encoder="toy")


# --------------------------------------------------------------------------- build_pretrained


def test_build_pretrained_loads_into_a_network_built_without_its_random_init(tmp_path):
    src = Toy()
    sd = src.state_dict()
    del sd["body.1.num_batches_tracked"]  # an old checkpoint: load_strict lets it lack this
    p = tmp_path / "ckpt.pth"
    torch.save(sd, p)
    built_on = []

    def factory():
        toy = Toy()
        built_on.append(next(toy.parameters()).device.type)
        return toy

    net, info = build_pretrained(factory, {"weights": str(p)}, **ARGS)
    assert built_on == ["meta"] and not info.random_init
    for k, v in src.state_dict().items():
        expected = torch.zeros_like(v) if k.endswith("num_batches_tracked") else v
        assert torch.equal(net.state_dict()[k], expected), k
    # the refusal names the file, as every other refusal of weights does
    with pytest.raises(WeightsError, match=rf"the weights \({p}\) do not match"):
        build_pretrained(lambda: nn.Linear(2, 3), {"weights": str(p)}, **ARGS)


def test_building_for_a_strict_load_imports_no_compiler():
    """On the meta device torch's ``normal_`` (an Embedding's init, a convolution's
    Kaiming-normal init) and ``empty_like`` (``to_empty``) are Python references that
    import ``torch._dynamo`` and torch's symbolic shapes on first use, about 2.3 s of an
    encoding job's start-up: the build skips the init and allocates with ``empty``."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from mmpipe.encoders.weights import for_strict_load\n"
        "net = for_strict_load(lambda: nn.Sequential(nn.Embedding(10, 4), nn.Conv2d(1, 2, 3),"
        " nn.Linear(2, 3)))\n"
        "assert all(p.device.type == 'cpu' for p in net.parameters())\n"
        "print([m for m in ('torch._dynamo', 'torch.fx.experimental.symbolic_shapes')"
        " if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


class WithTable(Toy):
    """A buffer no checkpoint carries: it must come from the network's own init."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.full((64,), 7.0), persistent=False)


class WithPlainTensor(Toy):
    """A tensor kept as a plain attribute: to_empty would leave it on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.full((3,), 2.0)


@pytest.mark.parametrize("factory, name", [(WithTable, "table"), (WithPlainTensor, "scale")])
def test_build_pretrained_initialises_a_network_with_state_no_checkpoint_holds(
        tmp_path, factory, name):
    src = factory()
    p = tmp_path / "ckpt.pth"
    torch.save(src.state_dict(), p)
    net, _ = build_pretrained(factory, {"weights": str(p)}, **ARGS)
    assert torch.equal(getattr(net, name), getattr(src, name))
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)


def test_build_pretrained_without_weights_is_the_seeded_random_init(caplog):
    with caplog.at_level(logging.WARNING):
        a, info = build_pretrained(Toy, {"allow_random_init": True}, **ARGS)
        b, _ = build_pretrained(Toy, {"allow_random_init": True}, **ARGS)
    assert info.random_init and "RANDOM WEIGHTS" in caplog.text
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v)


def test_a_download_records_its_url_beside_the_cached_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()

    def fetched(url, **kwargs):  # what torch hub leaves: the file in its cache
        torch.save(Toy().state_dict(), tmp_path / "checkpoints" / "toy.pth")
        return torch.load(tmp_path / "checkpoints" / "toy.pth", weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fetched)
    url = "https://host-a.org/toy.pth"
    sd, info = resolve_state_dict({"weights": url + "?X-Amz-Signature=s", "download": True},
                                  **ARGS)
    assert sd is not None and info.source == url  # what is recorded holds no credential
    assert (tmp_path / "checkpoints" / "toy.pth.source-url").read_text() == url + "\n"
    with pytest.raises(WeightsError, match="was downloaded from https://host-a.org/toy.pth"):
        resolve_state_dict({"weights": "https://host-b.org/toy.pth"}, **ARGS)
