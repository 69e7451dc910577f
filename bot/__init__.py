"""The running process: Bolt app, listeners, Block Kit views, HTTP server, scheduler, CLI."""
