"""Handlers of the ACL APIs: DescribeAcls, CreateAcls and DeleteAcls, v0-1
as Kafka 2.3.0 serves them.

Without C{--acls} the broker has no authorizer and answers them as Kafka
does without one: SECURITY_DISABLED (54). With it, they need Describe
(DescribeAcls) or Alter (the others) on the cluster, and change the ACLs
through the authorizer, which stores them and decides by them from the
next request on. v0 knows literal patterns only: its requests name none
(they are literal), so its answers hold literal ACLs only.
"""

from kafkaw.broker.authorizer import (
    CLUSTER_NAME,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    bindingError,
    creationError,
    isDefinite,
    matchesFilter,
)
from kafkaw.protocol import schema
from kafkaw.protocol.errors import CodecError, ErrorCode
from kafkaw.storage.interfaces import AclBinding

DESCRIBE_ACLS = 29
CREATE_ACLS = 30
DELETE_ACLS = 31

_NO_AUTHORIZER = "No Authorizer is configured on the broker (start it with --acls)"
_NOT_AUTHORIZED = "Cluster authorization failed."


def checkCreations(request):
    """Refuse (L{CodecError}: the connection closes) the creations Kafka
    cannot even parse: a resource type, operation or permission of ANY, a
    pattern type of ANY or MATCH."""
    for c in request.creations:
        if (
            c.resourceType == ResourceType.ANY
            or c.resourcePatternType in (PatternType.ANY, PatternType.MATCH)
            or c.operation == Operation.ANY
            or c.permissionType == Permission.ANY
        ):
            raise CodecError(f"an ACL to create cannot hold ANY or MATCH: {tuple(c)!r:.200}")
    return request


def _encode(apiKey, header, value):
    return schema.encodeResponse(apiKey, header.apiVersion, header.correlationId, value)


def _refusal(gateway, operation):
    """(error code, message) when the ACL APIs are refused, else None."""
    if not gateway.allowed(operation, ResourceType.CLUSTER, CLUSTER_NAME):
        return ErrorCode.CLUSTER_AUTHORIZATION_FAILED, _NOT_AUTHORIZED
    if gateway.broker.authorizer is None:
        return ErrorCode.SECURITY_DISABLED, _NO_AUTHORIZER
    return None


def describeAcls(header, request, gateway):
    refused = _refusal(gateway, Operation.DESCRIBE)
    if refused:
        return _encode(DESCRIBE_ACLS, header, {"errorCode": refused[0], "errorMessage": refused[1], "resources": []})
    aclFilter = AclBinding(
        request.resourceType, request.resourceNameFilter, request.resourcePatternType, request.principalFilter,
        request.hostFilter, request.operation, request.permissionType,
    )
    byResource = {}
    for acl in sorted(gateway.broker.authorizer.acls()):
        if matchesFilter(acl, aclFilter):
            byResource.setdefault((acl.resourceType, acl.resourceName, acl.patternType), []).append({
                "principal": acl.principal, "host": acl.host, "operation": acl.operation, "permissionType": acl.permission,
            })
    return _encode(DESCRIBE_ACLS, header, {
        "errorCode": 0, "errorMessage": None,
        "resources": [
            {"type": resourceType, "name": name, "patternType": patternType, "acls": acls}
            for (resourceType, name, patternType), acls in byResource.items()
        ],
    })


def createAcls(header, request, gateway):
    """Each creation is stored, or refused with INVALID_REQUEST and why;
    the valid ones in one write."""
    creations = request.creations
    refused = _refusal(gateway, Operation.ALTER)
    if refused:
        return _encode(CREATE_ACLS, header, {"results": [{"errorCode": refused[0], "errorMessage": refused[1]}] * len(creations)})
    results, valid = [], []
    for c in creations:
        binding = AclBinding(
            c.resourceType, c.resourceName, c.resourcePatternType, c.principal, c.host, c.operation, c.permissionType
        )
        why = creationError(binding)
        if why is None:
            valid.append(binding)
            results.append({"errorCode": 0, "errorMessage": None})
        else:
            results.append({"errorCode": ErrorCode.INVALID_REQUEST, "errorMessage": why})

    def failed(reason):
        gateway.log.warn("storing ACLs failed: {why}", why=reason.getErrorMessage())
        for result in results:
            if result["errorCode"] == 0:
                result.update(errorCode=ErrorCode.UNKNOWN, errorMessage=f"storing the ACL failed: {reason.getErrorMessage()}")

    def answer(_):
        if valid:
            gateway.log.info(
                "{principal} from {peer} created {count} ACL(s): {acls}",
                principal=gateway.principal, peer=gateway.connection.peer, count=len(valid), acls=describe(valid),
            )
        return _encode(CREATE_ACLS, header, {"results": results})

    d = gateway.broker.authorizer.addAcls(valid)
    return d.addCallbacks(lambda _: None, failed).addCallback(answer)


def deleteAcls(header, request, gateway):
    """Each filter deletes the ACLs it matches (each ACL under the first
    filter that matches it), all in one write. When every filter names one
    ACL exactly, each is checked as an ACL first (INVALID_REQUEST), as Kafka
    does."""
    filters = request.filters
    refused = _refusal(gateway, Operation.ALTER)
    if refused:
        return _encode(DELETE_ACLS, header, {"filterResults": [
            {"errorCode": refused[0], "errorMessage": refused[1], "matchingAcls": []} for _ in filters
        ]})
    authorizer = gateway.broker.authorizer
    aclFilters = [
        AclBinding(f.resourceTypeFilter, f.resourceNameFilter, f.patternTypeFilter, f.principalFilter, f.hostFilter,
                   f.operation, f.permissionType)
        for f in filters
    ]
    errors = [None] * len(filters)
    if all(isDefinite(f) for f in aclFilters):
        errors = [bindingError(f) for f in aclFilters]
    matched = [[] for _ in filters]
    for acl in sorted(authorizer.acls()):
        for index, aclFilter in enumerate(aclFilters):
            if errors[index] is None and matchesFilter(acl, aclFilter):
                matched[index].append(acl)
                break
    gone = [acl for acls in matched for acl in acls]

    def answer(failure):
        if failure is not None:
            gateway.log.warn("deleting ACLs failed: {why}", why=failure.getErrorMessage())
        elif gone:
            gateway.log.info(
                "{principal} from {peer} deleted {count} ACL(s): {acls}",
                principal=gateway.principal, peer=gateway.connection.peer, count=len(gone), acls=describe(gone),
            )
        code, message = (0, None) if failure is None else (ErrorCode.UNKNOWN, f"deleting the ACL failed: {failure.getErrorMessage()}")
        results = []
        for why, acls in zip(errors, matched):
            results.append({
                "errorCode": 0 if why is None else ErrorCode.INVALID_REQUEST, "errorMessage": why,
                "matchingAcls": [
                    {"errorCode": code, "errorMessage": message, "resourceType": acl.resourceType,
                     "resourceName": acl.resourceName, "patternType": acl.patternType, "principal": acl.principal,
                     "host": acl.host, "operation": acl.operation, "permissionType": acl.permission}
                    for acl in acls
                ],
            })
        return _encode(DELETE_ACLS, header, {"filterResults": results})

    return authorizer.removeAcls(gone).addCallbacks(lambda _: answer(None), answer)


def _name(enumeration, value):
    try:
        return enumeration(value).name
    except ValueError:
        return str(value)


_LOGGED_ACLS = 10  # ACLs named in one log line; the others are counted


def describe(acls):
    """ACLs for a log line: "User:alice ALLOW READ on TOPIC LITERAL 'logs' from *; ..."."""
    named = "; ".join(
        f"{acl.principal} {_name(Permission, acl.permission)} {_name(Operation, acl.operation)} on "
        f"{_name(ResourceType, acl.resourceType)} {_name(PatternType, acl.patternType)} {acl.resourceName!r:.200} from {acl.host}"
        for acl in acls[:_LOGGED_ACLS]
    )
    return named + (f"; and {len(acls) - _LOGGED_ACLS} more" if len(acls) > _LOGGED_ACLS else "")
