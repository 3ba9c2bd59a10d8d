"""Registers the recorder's bus fixture; the helpers live in ``recorder_harness`` (a unique module name)."""

from recorder_harness import bus

__all__ = ["bus"]
