"""Valid clicks the stream cannot count where they belong leave as dead letters with their reason.

They are not malformed: the whole click travels as JSON in the payload, so a
reconciliation can read it back, and the raw archive keeps it too.
"""

import orjson

from transforms.records import Click, DeadLetter

SKEWED = "skewed"
TOO_LATE = "too_late"


def set_aside(click: Click, reason: str, detail: str) -> DeadLetter:
    payload = orjson.dumps(click._asdict()).decode()
    return DeadLetter(reason=reason, detail=detail, source="", offset=-1, length=len(payload), payload=payload)
