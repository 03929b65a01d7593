"""Outputs, each in its own stage thread: per-frame JSON Lines, annotated video, and rule events
over ZeroMQ, as JSON Lines, or through the durable outbox to MQTT and webhooks.

`SINKS` maps a sink config's `type` to its class. Adding a sink is one module with a `Sink`
subclass (and its `from_config`), one line here, and its pydantic model in `config/schema.py`
added to the `SinkConfig` union.
"""

from pipeline.registry import Registry
from pipeline.sinks.base import Sink, SinkContext, SinkStage

SINKS: Registry[Sink] = Registry("sink", {
    "jsonl": "pipeline.sinks.jsonl:JsonlSink",
    "video": "pipeline.sinks.video:VideoSink",
    "zmq": "pipeline.sinks.events:ZmqEventSink",
    "events": "pipeline.sinks.events:EventsJsonlSink",
    "mqtt": "pipeline.sinks.mqtt:MqttSink",
    "webhook": "pipeline.sinks.webhook:WebhookSink",
})


def create_sink(config: object, context: SinkContext) -> Sink:
    """The sink for one `sinks[]` config entry, by its `type`.

    Args:
        config: a validated sink config (any model with a `type` field).
        context: what the sink may ask of the graph.

    Returns:
        The sink, not opened yet.
    """
    return SINKS.get(config.type).from_config(config, context)  # type: ignore[attr-defined]


__all__ = ["SINKS", "Sink", "SinkContext", "SinkStage", "create_sink"]
