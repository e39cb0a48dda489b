"""The partitioner: batches candidate pods, plans, writes spec annotations on nodes."""
