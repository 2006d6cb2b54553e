"""refundflow: the operator's command line for a running Refundflow (topics, DLQs, outboxes, refunds, consumers)."""
