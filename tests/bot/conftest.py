"""Fixtures for the Slack app tests: the fake Slack Web API server."""

from tests.slack_fake import fake_slack

__all__ = ["fake_slack"]
