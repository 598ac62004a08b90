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
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())
