"""Drills: scenarios, the sandbox they run in, and rehearsing them in a sandbox account."""
