"""Settings of the recorder (env prefix ``AIBRIDGE_``), validated once at start."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from aibridge.settings import CommonSettings, StoreSettings


class RecorderSettings(CommonSettings, StoreSettings):
    """How the recorder consumes the topic, batches rows and writes them to the store."""

    listen: str = Field(default="0.0.0.0:8082", description="HOST:PORT of /healthz, /readyz and /metrics.")
    consumer_group: str = Field(default="aibridge-recorder", min_length=1, description="Kafka consumer group.")
    batch_max_rows: PositiveInt = Field(
        default=10_000, description="Write a batch once it holds this many events (ClickHouse wants large inserts)."
    )
    batch_max_seconds: PositiveFloat = Field(
        default=1.0, description="Write a batch once its oldest event waited this long, full or not."
    )
    poll_max_records: PositiveInt = Field(default=2_000, description="Messages taken from the bus per poll.")
    dlq_topic: str = Field(default="", description="Dead-letter topic; empty means '<AIBRIDGE_KAFKA_TOPIC>.dlq'.")
    retry_backoff_min: PositiveFloat = Field(default=0.2, description="First retry delay (s) of a failed write.")
    retry_backoff_max: PositiveFloat = Field(default=30.0, description="Longest retry delay (s) of a failed write.")
    shutdown_timeout: PositiveFloat = Field(
        default=20.0, description="On stop, how long (s) to keep retrying the last batch before leaving it uncommitted."
    )
    consumer_lag_interval: PositiveFloat = Field(
        default=5.0, description="Seconds between reads of the consumer lag (aibridge_recorder_consumer_lag_messages)."
    )
    kafka_session_timeout_ms: PositiveInt = Field(default=10_000, description="Consumer-group session timeout.")
    kafka_heartbeat_interval_ms: PositiveInt = Field(default=3_000, description="Consumer-group heartbeat interval.")
    kafka_max_poll_interval_ms: PositiveInt = Field(
        default=300_000, description="Longest gap between polls before the member is considered stuck."
    )
    kafka_rebalance_timeout_ms: PositiveInt | None = Field(
        default=None, description="How long a rebalance waits for members to rejoin (aiokafka's default when unset)."
    )
    kafka_fetch_max_bytes: PositiveInt = Field(default=52_428_800, description="Most bytes one fetch returns.")
    kafka_fetch_max_wait_ms: PositiveInt = Field(
        default=100, description="How long the broker may hold a fetch waiting for data (adds to the delay)."
    )
    kafka_max_partition_fetch_bytes: PositiveInt = Field(
        default=8_388_608, description="Most bytes one fetch returns per partition (larger fetches, fewer round trips)."
    )

    @model_validator(mode="after")
    def _resolve(self) -> RecorderSettings:
        if not self.dlq_topic:
            self.dlq_topic = f"{self.kafka_topic}.dlq"
        if self.retry_backoff_max < self.retry_backoff_min:
            raise ValueError("AIBRIDGE_RETRY_BACKOFF_MAX must not be smaller than AIBRIDGE_RETRY_BACKOFF_MIN")
        if self.dlq_topic == self.kafka_topic:
            raise ValueError("AIBRIDGE_DLQ_TOPIC must differ from AIBRIDGE_KAFKA_TOPIC")
        return self

    def kafka_consumer_options(self) -> dict[str, Any]:
        """Extra options for :class:`aibridge.kafka.KafkaConsumer` (consumer-group timing, fetch size)."""
        options: dict[str, Any] = {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
            "max_poll_interval_ms": self.kafka_max_poll_interval_ms,
            "fetch_max_bytes": self.kafka_fetch_max_bytes,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
            "max_partition_fetch_bytes": self.kafka_max_partition_fetch_bytes,
        }
        if self.kafka_rebalance_timeout_ms is not None:
            options["rebalance_timeout_ms"] = self.kafka_rebalance_timeout_ms
        return options
