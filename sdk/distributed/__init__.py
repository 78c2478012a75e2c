"""Steps on other processes and machines, in one trace: the executors (``executors``), what a
task carries (``task``), spans on the wire (``wire``), the caller's side (``caller``) and the
worker's side (``worker``)."""
