"""Generated protobuf contracts of Cortado (make proto)."""
