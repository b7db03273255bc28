from typing import Any


class Handler:
    def handle_async(self, payload: Any) -> dict[str, bool]:
        return {"ok": True}
