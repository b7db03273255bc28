"""The webhook sender: POSTs each finished request's record to its webhook URL, signed, at least once."""
