"""The signals that stop a run, in a module of their own: the CLI installs its handling of them
on its first line, before anything heavy is imported."""

# Signals that stop a run gracefully. SIGHUP is a closed terminal or a lost SSH session: the run
# must drain and record what is in flight exactly as for Ctrl-C, not die with requests unrecorded.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
