"""schemathesis hooks of scripts/contract (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key is single-use by contract: the same key with another body
is refused with 422 (IETF httpapi draft "The Idempotency-Key HTTP Header
Field"). schemathesis draws keys from the documented pattern and may draw the
same one for two different requests, which the API rightly refuses. So a
well-formed key is replaced by a fresh UUID before each call; malformed keys
(the negative cases) are sent as drawn, and must still be refused with 400.
"""

import re
import uuid

import schemathesis

# The pattern the services document for the header (libs/idempotency).
KEY = re.compile(r'^(?:[!#-~][!-~]{0,254}|"(?:[!#-\[\]-~]|\\["\\]){1,255}")$')


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            value = headers[name]
            if isinstance(value, str) and KEY.match(value):
                headers[name] = str(uuid.uuid4())
