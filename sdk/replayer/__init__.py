"""Replay: the plan the hot path consults (``plan``) and the driver that reads the store,
imports the workflow and runs it (``runner``). The package itself imports nothing, so the
recording layers can use the plan without loading the driver."""
