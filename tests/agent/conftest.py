from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.fake_kubelet import FakeKubelet


@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    k = FakeKubelet().start()
    yield k
    k.stop()
