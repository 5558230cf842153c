"""Validates OCSF records (one JSON object per line, read from the file named by argv[1])
against the OCSF 1.5.0 schema as the PyPI package ocsf-emitter 0.3.0 ships it: Pydantic
models generated from the OCSF 1.5.0 JSON Schema (exported with ocsf-lib) for the event
classes and objects, and ocsf_emitter.validate for the class/category/type_uid/name
invariants and the schema version.

On top of the package's checks, because its models accept unknown keys: every key must be
an attribute of its class or object (only `unmapped` is free-form), enum captions must be
the schema's, and the schema's `at_least_one` constraints that the models do not encode are
checked. Prints one line per problem and exits 1 if there is any; prints "N records valid".
"""

import json
import sys
import types
import typing

from pydantic import BaseModel, ValidationError

import ocsf_emitter
from ocsf_emitter import _models as models
from ocsf_emitter.errors import InvalidFindingError
from ocsf_emitter.validate import validate

CLASSES = {
    3001: models.AccountChange,
    3002: models.Authentication,
    6003: models.ApiActivity,
}

# OCSF 1.5.0 captions (dictionary.json enums and the class activity_id enums).
SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
            5: "Critical", 6: "Fatal", 99: "Other"}
STATUS = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}
ACTIVITY = {
    3001: {0: "Unknown", 1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset",
           5: "Disable", 6: "Delete", 7: "Attach Policy", 8: "Detach Policy", 9: "Lock",
           10: "MFA Factor Enable", 11: "MFA Factor Disable", 12: "Unlock", 99: "Other"},
    3002: {0: "Unknown", 1: "Logon", 2: "Logoff", 3: "Authentication Ticket",
           4: "Service Ticket Request", 5: "Service Ticket Renew", 6: "Preauth", 99: "Other"},
    6003: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"},
}
# network_endpoint and user `at_least_one` constraints (objects/*.json in OCSF 1.5.0).
ENDPOINT_ANY = ["ip", "uid", "name", "hostname", "instance_uid", "interface_uid",
                "interface_name", "domain", "svc_name"]
USER_ANY = ["account", "name", "uid"]
FREE_FORM = {"unmapped"}


def model_types(annotation):
    """The BaseModel classes an annotation refers to (through Optional, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found += model_types(arg)
    return found


def unknown_keys(model, value, path, problems):
    if isinstance(value, list):
        for i, item in enumerate(value):
            unknown_keys(model, item, f"{path}[{i}]", problems)
        return
    if not isinstance(value, dict):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            problems.append(f"{where}: not an attribute of {model.__name__} in OCSF 1.5.0")
            continue
        if key in FREE_FORM:
            continue
        for nested in model_types(fields[key].annotation):
            unknown_keys(nested, item, where, problems)


def check(record):
    problems = []
    class_uid = record.get("class_uid")
    model = CLASSES.get(class_uid)
    if model is None:
        return [f"class_uid: {class_uid!r} is not 3001, 3002 or 6003"]
    try:
        event = model.model_validate_json(json.dumps(record), strict=True)
        validate(event)
    except ValidationError as e:
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            problems.append(f"{model.__name__}: {where}: {err['msg']}")
    except InvalidFindingError as e:  # names the fields
        for detail in e.field_errors or [str(e)]:
            problems.append(f"{model.__name__}: {detail}")
    unknown_keys(model, record, "", problems)
    if SEVERITY.get(record.get("severity_id")) != record.get("severity"):
        problems.append(f"severity: {record.get('severity')!r} is not the caption of severity_id")
    if "status_id" in record and STATUS.get(record.get("status_id")) != record.get("status"):
        problems.append(f"status: {record.get('status')!r} is not the caption of status_id")
    if ACTIVITY[class_uid].get(record.get("activity_id")) != record.get("activity_name"):
        problems.append(f"activity_name: {record.get('activity_name')!r} is not the caption")
    if record.get("type_name") != f"{record.get('class_name')}: {record.get('activity_name')}":
        problems.append(f"type_name: {record.get('type_name')!r}")
    if class_uid == 3002 and not ("service" in record or "dst_endpoint" in record):
        problems.append("Authentication needs at least one of service, dst_endpoint")
    for key in ("src_endpoint", "dst_endpoint"):
        if key in record and not any(k in record[key] for k in ENDPOINT_ANY):
            problems.append(f"{key}: needs at least one of {ENDPOINT_ANY}")
    for path, user in (("user", record.get("user")),
                       ("actor.user", record.get("actor", {}).get("user"))):
        if user is not None and not any(k in user for k in USER_ANY):
            problems.append(f"{path}: needs at least one of {USER_ANY}")
    return problems


def main():
    assert ocsf_emitter.__name__
    count = 0
    failed = False
    with open(sys.argv[1], encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            record = json.loads(line)
            for problem in check(record):
                failed = True
                print(f"line {number} ({record.get('unmapped', {}).get('evident', {}).get('action')}): {problem}")
            count += 1
    if count == 0:
        print("no records")
        sys.exit(1)
    if failed:
        sys.exit(1)
    print(f"{count} records valid")


main()
