"""The stream: interaction events on Kafka folded into the online store (the ingester), and
events produced onto the topic (replay, synthetic streams)."""
