"""Method implementations, one sub-package per method (shared parts in ``methods.common``)."""
