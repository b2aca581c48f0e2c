"""``benchmarks/encoder_throughput.py --precision``: the GPU table's mixed-precision rows
come from it, so it must reach every encoder that runs a network, and only those (an
encoder without one has no forward to run at a precision)."""

from __future__ import annotations

import sys

from mmpipe.config import load_config
from mmpipe.encoders.registry import get_encoder_type
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from encoder_throughput import set_precision  # noqa: E402


def test_precision_reaches_every_network_encoder_and_no_other():
    cfg = load_config(REPO / "config.yaml")
    before = {k: dict(v) for k, v in cfg["encoders"].items()}
    set_precision(cfg, None)
    assert cfg["encoders"] == before
    set_precision(cfg, "bfloat16")
    networks = {k for k, v in before.items() if get_encoder_type(v["type"]).build is not None}
    assert networks and networks != set(before)  # the config has both kinds
    for name, enc in cfg["encoders"].items():
        assert enc.get("precision") == ("bfloat16" if name in networks
                                        else before[name].get("precision"))
