"""Choosing intra-op threads from the idle cores."""

from __future__ import annotations

import os

import pytest
import torch

from simclr_cli.core import _threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_idle_cores__busy_machine_leaves_one(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert _threads.idle_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert _threads.idle_cores() == 2


def test_use_idle_cores__simclr_threads_wins(monkeypatch):
    monkeypatch.setenv("SIMCLR_THREADS", "1")
    assert _threads.use_idle_cores(torch.device("cpu")) == 1
    assert torch.get_num_threads() == 1


def test_use_idle_cores__auto_follows_the_load(monkeypatch):
    if torch.get_num_threads() < 2:
        pytest.skip("needs at least two intra-op threads to see a change")
    monkeypatch.setenv("SIMCLR_THREADS", "auto")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert _threads.use_idle_cores(torch.device("cpu")) == 1


def test_use_idle_cores__default_leaves_torch_alone(monkeypatch):
    monkeypatch.delenv("SIMCLR_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    before = torch.get_num_threads()
    assert _threads.use_idle_cores(torch.device("cpu")) == before
