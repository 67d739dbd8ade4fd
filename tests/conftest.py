"""Shared fixtures: the real plugin must be installed for tests marked `plugin`."""

from __future__ import annotations

import os

# Before anything imports JAX: the XLA:CPU option of diffsynth.runtime (per-sample loops compiled
# as one kernel; outputs unchanged). The glibc malloc tunable must be set before Python starts:
# .ci/run exports it.
from diffsynth.runtime import configure_xla

configure_xla()

import pytest  # noqa: E402

AMSYNTH_VST = "/usr/lib/vst/amsynth_vst.so"


@pytest.fixture(scope="session")
def amsynth_path() -> str:
    if not os.path.exists(AMSYNTH_VST):
        pytest.fail(f"amsynth is not installed ({AMSYNTH_VST} missing): run `bash scripts/setup.sh`")
    return AMSYNTH_VST
