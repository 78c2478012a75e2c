"""Where spans go: the local SQLite store (writer and reader), its records, OTLP and files.

Import the module you need (``spanflow.exporters.store``, ``.sqlite_store``, ``.file_formats``,
``.otlp``); this package itself imports nothing, so a reader never loads the writer.
"""
