"""Helpers for tests and benchmarks: the Kafka-protocol test broker and free ports."""
