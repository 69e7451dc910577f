"""What the bot can do, independent of Slack: each command validates, changes state, records."""
