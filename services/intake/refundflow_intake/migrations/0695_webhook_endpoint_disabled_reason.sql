-- Why Refundflow disabled an endpoint (its 410, or N failed events in a row), as the notifier's
-- webhook_endpoint.disabled said: the merchant sees it beside enabled = false. NULL when the merchant chose the state.
ALTER TABLE webhook_endpoints ADD COLUMN disabled_reason text;
