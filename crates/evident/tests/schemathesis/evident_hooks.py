"""Schemathesis hooks for tests/openapi_schemathesis.rs: keep the run's own keys alive.

The run authenticates every request with one owner key. Stateful testing follows links
(`GET /api/v1/keys` lists that key's id), so it could revoke or rotate that key and turn every
later request into a 401. Any path parameter naming a protected key id is pointed at the spare
key the test created for that purpose instead; nothing else is changed.
"""

import os

import schemathesis

PROTECTED = {i for i in os.environ.get("EVIDENT_ST_PROTECTED_KEY_IDS", "").split(",") if i}
SPARE = os.environ.get("EVIDENT_ST_SPARE_KEY_ID", "")


@schemathesis.hook
def before_call(context, case, kwargs):
    parameters = case.path_parameters or {}
    for name, value in parameters.items():
        if value in PROTECTED:
            parameters[name] = SPARE
