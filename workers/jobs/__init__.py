"""Job services the actors call: browse, capture, expiry, imports."""
