"""GuardDuty findings: normalisation of every delivery shape, ingest and polling."""
