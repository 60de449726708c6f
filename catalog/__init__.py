"""The catalog in real time: item changes on Kafka (``events``)."""
