"""The handler process: loads the user's Handler and runs the jobs its executor hands it.

Started by the executor as `python -P -m services.executor.handlerprocess` (`__main__`) with the
project folder as working directory, under an unprivileged user when the executor runs as root. It
holds no broker connection and no credential: jobs come in and outcomes go out over one end of a
socket pair (`services.executor.channel`); the executor pulls, records and acknowledges. A crash
here never takes the executor down. What the two sides agree on is `services.executor.contract`.

A request cancelled while it runs (`ToHandler.cancel`): an `async def` call is cancelled (a batch's
once every request in it is), a plain one cannot be and sees `cortado.cancelled(request_id)` turn
true instead; either way its outcome is `RequestCancelled`, which the executor drops. One that does
not stop is the executor's to deal with (it restarts the process after its grace period).

Modules: `loop` (receiving jobs, the slots that run them, the drain on stop), `execute` (one call of
the handler, single or batched, and its outcomes), `outbox` (frames to the executor), `loading`
(importing and constructing the handler). Importing this package imports them all, so that
`contract.IMPORT_CHECK` proves an environment can run the process.
"""

from services.executor.handlerprocess.execute import Execution, HandlerTimedOutError, user_traceback
from services.executor.handlerprocess.loading import load_handler
from services.executor.handlerprocess.loop import Worker
from services.executor.handlerprocess.outbox import Outbox

__all__ = ["Execution", "HandlerTimedOutError", "Outbox", "Worker", "load_handler", "user_traceback"]
