"""Our code around FastChat: typed model registry, supervisord rendering,
the worker launcher, our llama.cpp worker and the narrow FastChat shims."""
