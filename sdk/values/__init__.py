"""How recorded values are made: arguments bound by name, JSON that never fails, secrets
redacted, State changes as JSON Patch. Pure functions over values; no spans, no runtime."""
