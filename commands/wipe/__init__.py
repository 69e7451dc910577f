"""`/incident wipe [INC-N]`: delete an investigation's evidence once the incident is resolved.

The plan lists every item before anything is deleted, and goes through the same approval as
containment. It covers only what the incident created, proven by tags:

- the clean-room stack (tagged `incident-bot:incident=<key>`), with its instance and volumes;
- restored volumes: the incident tag *and* `incident-bot:source-snapshot` (the containment's
  tag step also marks the compromised instance's own volumes with the incident tag, and
  those are not the incident's to delete);
- snapshots the containment took (incident tag);
- the KMS grants `/forensics` made on source snapshots' keys for the forensic account's copies
  (recorded by its share step; revoked, in the incident's account, if still named for it);
- VPC flow logs the containment enabled (incident tag), then their log files;
- evidence objects under `<prefix><key>/` whose object tags name the incident, every
  version; flow-log files there only when their name carries one of those flow logs' ids;
- the incident's own KMS key (incident tag, customer managed, never the configured shared
  evidence key): deletion is *scheduled*, 7 to 30 days out, and can be cancelled until then.

Each item is checked again right before it is deleted, and every deletion is a timeline
event. `incident.facts["wipe"]` keeps what was deleted for the incident card.
"""

from commands.wipe.engine import Gone, NotOurs, WipeEngine
from commands.wipe.inventory import SOURCE_SNAPSHOT_TAG, TARGET_KIND, Scope, inventory
from commands.wipe.plan import (
    ENGINE,
    PERMISSIONS,
    STEPS,
    WIPEABLE,
    Proposed,
    build_plan,
    plan_text,
    propose_wipe,
    wipe_lines,
)

__all__ = [
    "ENGINE",
    "PERMISSIONS",
    "SOURCE_SNAPSHOT_TAG",
    "STEPS",
    "TARGET_KIND",
    "WIPEABLE",
    "Gone",
    "NotOurs",
    "Proposed",
    "Scope",
    "WipeEngine",
    "build_plan",
    "inventory",
    "plan_text",
    "propose_wipe",
    "wipe_lines",
]
