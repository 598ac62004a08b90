"""The exit statuses of the program (the reference's table). A DispatcherError carries its own."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
