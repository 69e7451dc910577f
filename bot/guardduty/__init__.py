"""GuardDuty delivery over HTTP: SNS verification, the ingest route, finding cards."""
