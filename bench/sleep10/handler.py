import time
from typing import Any


class Handler:
    def handle_async(self, payload: Any) -> dict[str, bool]:
        time.sleep(0.01)
        return {"ok": True}
