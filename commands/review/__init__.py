"""The post-incident review: milestones and metrics from the timeline, the report (Markdown
and one self-contained HTML page with its chart), and the team's metrics over many incidents."""
