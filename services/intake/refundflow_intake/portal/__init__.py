"""The customer portal: the page a customer reaches from their emails, the hosted refund policy, and the links."""
