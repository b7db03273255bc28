from typing import Any


class Handler:
    def handle_batch(self, payloads: list[Any]) -> list[dict[str, Any]]:
        return [{"ok": True, "batch_size": len(payloads)}] * len(payloads)
