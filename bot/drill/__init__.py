"""Drills: rehearse a whole incident offline (moto, no Slack) or in a sandbox account."""
