"""Deadlines and reminders: the GDPR regulator clock, stale nudges, the daily digest.

Every reminder is a `Reminder` row; the row is the truth and a scheduler only wakes up to
claim what is due. Lifecycle of one reminder:
  queue.schedule_reminder (idempotent on dedupe_key)
  -> queue.claim_due (atomic, marks `late` when it came due while no process was up)
  -> delivery.prepare_delivery (decides what to say, or cancels it because it no longer
     applies, and schedules follow-ups such as the next overdue alert)
  -> the bot renders and posts it
  -> delivery.record_fired (timeline event) | delivery.record_failed (retry, or give up loudly).

Modules: policy (the configured hours, passed explicitly by every caller), queue (schedule,
cancel, claim), gdpr (the regulator clock), tags (personal-data tag detection), stale, digest,
delivery. This package imports none of them, so importing one module loads only what it uses.
"""
