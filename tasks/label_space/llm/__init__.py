"""Asking an LLM: its prompts, the parsers of its replies, one answer cache, one client, its servers.

``prompts`` holds every question the pipeline asks (describe's few-shot and aspects prompts,
repair's), ``replies`` reads the answers, ``cache`` keeps them on disk per what determines
them, ``client`` asks any OpenAI-compatible endpoint, and ``engines`` lists the servers that
can serve a model on this machine. The describe and repair stages ask through these alone.

Replies are data: they are parsed as text, never evaluated, and never become a path (cache
files are named by a hash). The API key is read from the environment at call time and is
never written to a cache file, a log line or an exception message.
"""
