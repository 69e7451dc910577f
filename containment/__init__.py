"""AWS containment actions (boto3). Knows nothing of Slack."""
