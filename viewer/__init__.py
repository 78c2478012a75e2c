"""The viewer: the ``spanflow`` command line and the web page, both reading the store."""
