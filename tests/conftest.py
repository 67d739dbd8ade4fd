"""Shared fixtures: the real plugin must be installed for tests marked `plugin`."""

from __future__ import annotations

import os

import pytest

AMSYNTH_VST = "/usr/lib/vst/amsynth_vst.so"


@pytest.fixture(scope="session")
def amsynth_path() -> str:
    if not os.path.exists(AMSYNTH_VST):
        pytest.fail(f"amsynth is not installed ({AMSYNTH_VST} missing): run `bash scripts/setup.sh`")
    return AMSYNTH_VST
