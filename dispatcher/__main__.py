import signal
import sys


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# Before anything else is imported: a signal while the program starts is exit 130 with nothing
# sent, never the default action (143, no summary); `main` then handles them for the whole run.
for _name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, _name), _stop)
try:
    from dispatcher.cli import main

    status = main()
except KeyboardInterrupt:  # also between the import and `main`'s own handlers: never the default action
    sys.exit(130)
sys.exit(status)
