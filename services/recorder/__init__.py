"""The recorder: consumes interception events from the bus and writes them to the ClickHouse store.

Stages (each a small class, see :mod:`aibridge.recorder.stages`): decode and validate → process
(event → row) → batch by size or time → write (one insert per table) → commit offsets. Invalid
events go to the dead-letter topic. See ``docs/recorder.md``.
"""
