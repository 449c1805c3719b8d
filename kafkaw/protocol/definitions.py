"""The requests and responses of the APIs kafkaw knows, as Kafka 2.3.0 defines them.

Written by reading Kafka's C{clients/src/main/resources/common/message/*.json}
at tag 2.3.0 (no flexible versions yet); C{tests/check_definitions.py}
compares this file with those JSON files field by field. Each C{F(...)} is one
JSON field: C{F(jsonName, type, versions="0+", nullable=nullableVersions,
default=..., fields=[...])}, in the JSON's order, which is the wire order.

Values decode to namedtuples: C{PRODUCE.request.type} is the request's class,
C{PRODUCE.request["topics"]["partitions"].type} a nested one. Encoders also
take plain dicts keyed by field name (see L{kafkaw.protocol.schema}).
"""

from kafkaw.protocol.schema import Api, Struct
from kafkaw.protocol.schema import Field as F

THROTTLE = "ThrottleTimeMs"  # the quota delay answers carry from some version on

PRODUCE = Api(
    0,
    "Produce",
    0,
    7,
    Struct(
        "ProduceRequest",
        [
            F("TransactionalId", "string", "3+", nullable="0+"),
            F("Acks", "int16"),
            F("TimeoutMs", "int32"),
            F(
                "Topics",
                "[]TopicProduceData",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]PartitionProduceData",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("Records", "bytes", nullable="0+"),
                        ],
                    ),
                ],
            ),
        ],
    ),
    Struct(
        "ProduceResponse",
        [
            F(
                "Responses",
                "[]TopicProduceResponse",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]PartitionProduceResponse",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("ErrorCode", "int16"),
                            F("BaseOffset", "int64"),
                            F("LogAppendTimeMs", "int64", "2+", default=-1),
                            F("LogStartOffset", "int64", "5+", default=-1),
                        ],
                    ),
                ],
            ),
            F(THROTTLE, "int32", "1+"),
        ],
    ),
)

FETCH = Api(
    1,
    "Fetch",
    0,
    11,
    Struct(
        "FetchRequest",
        [
            F("ReplicaId", "int32"),
            F("MaxWait", "int32"),
            F("MinBytes", "int32"),
            F("MaxBytes", "int32", "3+", default=0x7FFFFFFF),
            F("IsolationLevel", "int8", "4+", default=0),
            F("SessionId", "int32", "7+", default=0),
            F("Epoch", "int32", "7+", default=-1),
            F(
                "Topics",
                "[]FetchableTopic",
                fields=[
                    F("Name", "string"),
                    F(
                        "FetchPartitions",
                        "[]FetchPartition",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("CurrentLeaderEpoch", "int32", "9+", default=-1),
                            F("FetchOffset", "int64"),
                            F("LogStartOffset", "int64", "5+", default=-1),
                            F("MaxBytes", "int32"),
                        ],
                    ),
                ],
            ),
            F(
                "Forgotten",
                "[]ForgottenTopic",
                "7+",
                fields=[
                    F("Name", "string", "7+"),
                    F("ForgottenPartitionIndexes", "[]int32", "7+"),
                ],
            ),
            F("RackId", "string", "11+", default=""),
        ],
    ),
    Struct(
        "FetchResponse",
        [
            F(THROTTLE, "int32", "1+"),
            F("ErrorCode", "int16", "7+"),
            F("SessionId", "int32", "7+", default=0),
            F(
                "Topics",
                "[]FetchableTopicResponse",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]FetchablePartitionResponse",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("ErrorCode", "int16"),
                            F("HighWatermark", "int64"),
                            F("LastStableOffset", "int64", "4+", default=-1),
                            F("LogStartOffset", "int64", "5+", default=-1),
                            F(
                                "Aborted",
                                "[]AbortedTransaction",
                                "4+",
                                nullable="4+",
                                fields=[
                                    F("ProducerId", "int64", "4+"),
                                    F("FirstOffset", "int64", "4+"),
                                ],
                            ),
                            F("PreferredReadReplica", "int32", "11+"),
                            F("Records", "bytes", nullable="0+"),
                        ],
                    ),
                ],
            ),
        ],
    ),
)

LIST_OFFSETS = Api(
    2,
    "ListOffsets",
    0,
    5,
    Struct(
        "ListOffsetRequest",
        [
            F("ReplicaId", "int32"),
            F("IsolationLevel", "int8", "2+"),
            F(
                "Topics",
                "[]ListOffsetTopic",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]ListOffsetPartition",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("CurrentLeaderEpoch", "int32", "4+"),
                            F("Timestamp", "int64"),
                            F("MaxNumOffsets", "int32", "0"),
                        ],
                    ),
                ],
            ),
        ],
    ),
    Struct(
        "ListOffsetResponse",
        [
            F(THROTTLE, "int32", "2+"),
            F(
                "Topics",
                "[]ListOffsetTopicResponse",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]ListOffsetPartitionResponse",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("ErrorCode", "int16"),
                            F("OldStyleOffsets", "[]int64", "0"),
                            F("Timestamp", "int64", "1+", default=-1),
                            F("Offset", "int64", "1+", default=-1),
                            F("LeaderEpoch", "int32", "4+"),
                        ],
                    ),
                ],
            ),
        ],
    ),
)

METADATA = Api(
    3,
    "Metadata",
    0,
    8,
    Struct(
        "MetadataRequest",
        [
            # v0: empty = all topics; v1+: null = all topics, empty = none.
            F("Topics", "[]MetadataRequestTopic", nullable="1+", fields=[F("Name", "string")]),
            F("AllowAutoTopicCreation", "bool", "4+", default=True),
            F("IncludeClusterAuthorizedOperations", "bool", "8+"),
            F("IncludeTopicAuthorizedOperations", "bool", "8+"),
        ],
    ),
    Struct(
        "MetadataResponse",
        [
            F(THROTTLE, "int32", "3+"),
            F(
                "Brokers",
                "[]MetadataResponseBroker",
                fields=[
                    F("NodeId", "int32"),
                    F("Host", "string"),
                    F("Port", "int32"),
                    F("Rack", "string", "1+", nullable="1+", default=None),
                ],
            ),
            F("ClusterId", "string", "2+", nullable="2+", default=None),
            F("ControllerId", "int32", "1+", default=-1),
            F(
                "Topics",
                "[]MetadataResponseTopic",
                fields=[
                    F("ErrorCode", "int16"),
                    F("Name", "string"),
                    F("IsInternal", "bool", "1+", default=False),
                    F(
                        "Partitions",
                        "[]MetadataResponsePartition",
                        fields=[
                            F("ErrorCode", "int16"),
                            F("PartitionIndex", "int32"),
                            F("LeaderId", "int32"),
                            F("LeaderEpoch", "int32", "7+", default=-1),
                            F("ReplicaNodes", "[]int32"),
                            F("IsrNodes", "[]int32"),
                            F("OfflineReplicas", "[]int32", "5+"),
                        ],
                    ),
                    F("TopicAuthorizedOperations", "int32", "8+", default=-2147483648),
                ],
            ),
            F("ClusterAuthorizedOperations", "int32", "8+", default=-2147483648),
        ],
    ),
)

OFFSET_COMMIT = Api(
    8,
    "OffsetCommit",
    0,
    7,
    Struct(
        "OffsetCommitRequest",
        [
            F("GroupId", "string"),
            F("GenerationId", "int32", "1+", default=-1),
            F("MemberId", "string", "1+"),
            F("GroupInstanceId", "string", "7+", nullable="7+", default=None),
            F("RetentionTimeMs", "int64", "2-4", default=-1),
            F(
                "Topics",
                "[]OffsetCommitRequestTopic",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]OffsetCommitRequestPartition",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("CommittedOffset", "int64"),
                            F("CommittedLeaderEpoch", "int32", "6+", default=-1),
                            F("CommitTimestamp", "int64", "1", default=-1),
                            F("CommittedMetadata", "string", nullable="0+"),
                        ],
                    ),
                ],
            ),
        ],
    ),
    Struct(
        "OffsetCommitResponse",
        [
            F(THROTTLE, "int32", "3+"),
            F(
                "Topics",
                "[]OffsetCommitResponseTopic",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]OffsetCommitResponsePartition",
                        fields=[F("PartitionIndex", "int32"), F("ErrorCode", "int16")],
                    ),
                ],
            ),
        ],
    ),
)

OFFSET_FETCH = Api(
    9,
    "OffsetFetch",
    0,
    5,
    Struct(
        "OffsetFetchRequest",
        [
            F("GroupId", "string"),
            # v2+: null = every topic the group has offsets for.
            F(
                "Topics",
                "[]OffsetFetchRequestTopic",
                nullable="2+",
                fields=[F("Name", "string"), F("PartitionIndexes", "[]int32")],
            ),
        ],
    ),
    Struct(
        "OffsetFetchResponse",
        [
            F(THROTTLE, "int32", "3+"),
            F(
                "Topics",
                "[]OffsetFetchResponseTopic",
                fields=[
                    F("Name", "string"),
                    F(
                        "Partitions",
                        "[]OffsetFetchResponsePartition",
                        fields=[
                            F("PartitionIndex", "int32"),
                            F("CommittedOffset", "int64"),
                            F("CommittedLeaderEpoch", "int32", "5+"),
                            F("Metadata", "string", nullable="0+"),
                            F("ErrorCode", "int16"),
                        ],
                    ),
                ],
            ),
            F("ErrorCode", "int16", "2+", default=0),
        ],
    ),
)

FIND_COORDINATOR = Api(
    10,
    "FindCoordinator",
    0,
    2,
    Struct("FindCoordinatorRequest", [F("Key", "string"), F("KeyType", "int8", "1+", default=0)]),
    Struct(
        "FindCoordinatorResponse",
        [
            F(THROTTLE, "int32", "1+"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", "1+", nullable="1+"),
            F("NodeId", "int32"),
            F("Host", "string"),
            F("Port", "int32"),
        ],
    ),
)

JOIN_GROUP = Api(
    11,
    "JoinGroup",
    0,
    5,
    Struct(
        "JoinGroupRequest",
        [
            F("GroupId", "string"),
            F("SessionTimeoutMs", "int32"),
            F("RebalanceTimeoutMs", "int32", "1+", default=-1),
            F("MemberId", "string"),
            F("GroupInstanceId", "string", "5+", nullable="5+", default=None),
            F("ProtocolType", "string"),
            F("Protocols", "[]JoinGroupRequestProtocol", fields=[F("Name", "string"), F("Metadata", "bytes")]),
        ],
    ),
    Struct(
        "JoinGroupResponse",
        [
            F(THROTTLE, "int32", "2+"),
            F("ErrorCode", "int16"),
            F("GenerationId", "int32", default=-1),
            F("ProtocolName", "string"),
            F("Leader", "string"),
            F("MemberId", "string"),
            F(
                "Members",
                "[]JoinGroupResponseMember",
                fields=[
                    F("MemberId", "string"),
                    F("GroupInstanceId", "string", "5+", nullable="5+", default=None),
                    F("Metadata", "bytes"),
                ],
            ),
        ],
    ),
)

HEARTBEAT = Api(
    12,
    "Heartbeat",
    0,
    3,
    Struct(
        "HeartbeatRequest",
        [
            F("GroupId", "string"),
            F("GenerationId", "int32"),
            F("MemberId", "string"),
            F("GroupInstanceId", "string", "3+", nullable="3+", default=None),
        ],
    ),
    Struct("HeartbeatResponse", [F(THROTTLE, "int32", "1+"), F("ErrorCode", "int16")]),
)

LEAVE_GROUP = Api(
    13,
    "LeaveGroup",
    0,
    2,
    Struct("LeaveGroupRequest", [F("GroupId", "string"), F("MemberId", "string")]),
    Struct("LeaveGroupResponse", [F(THROTTLE, "int32", "1+"), F("ErrorCode", "int16")]),
)

SYNC_GROUP = Api(
    14,
    "SyncGroup",
    0,
    3,
    Struct(
        "SyncGroupRequest",
        [
            F("GroupId", "string"),
            F("GenerationId", "int32"),
            F("MemberId", "string"),
            F("GroupInstanceId", "string", "3+", nullable="3+", default=None),
            F("Assignments", "[]SyncGroupRequestAssignment", fields=[F("MemberId", "string"), F("Assignment", "bytes")]),
        ],
    ),
    Struct("SyncGroupResponse", [F(THROTTLE, "int32", "1+"), F("ErrorCode", "int16"), F("Assignment", "bytes")]),
)

DESCRIBE_GROUPS = Api(
    15,
    "DescribeGroups",
    0,
    3,
    Struct("DescribeGroupsRequest", [F("Groups", "[]string"), F("IncludeAuthorizedOperations", "bool", "3+")]),
    Struct(
        "DescribeGroupsResponse",
        [
            F(THROTTLE, "int32", "1+"),
            F(
                "Groups",
                "[]DescribedGroup",
                fields=[
                    F("ErrorCode", "int16"),
                    F("GroupId", "string"),
                    F("GroupState", "string"),
                    F("ProtocolType", "string"),
                    F("ProtocolData", "string"),
                    F(
                        "Members",
                        "[]DescribedGroupMember",
                        fields=[
                            F("MemberId", "string"),
                            F("ClientId", "string"),
                            F("ClientHost", "string"),
                            F("MemberMetadata", "bytes"),
                            F("MemberAssignment", "bytes"),
                        ],
                    ),
                    F("AuthorizedOperations", "int32", "3+", default=-2147483648),
                ],
            ),
        ],
    ),
)

LIST_GROUPS = Api(
    16,
    "ListGroups",
    0,
    2,
    Struct("ListGroupsRequest", []),
    Struct(
        "ListGroupsResponse",
        [
            F(THROTTLE, "int32", "1+"),
            F("ErrorCode", "int16"),
            F("Groups", "[]ListedGroup", fields=[F("GroupId", "string"), F("ProtocolType", "string")]),
        ],
    ),
)

SASL_HANDSHAKE = Api(
    17,
    "SaslHandshake",
    0,
    1,
    Struct("SaslHandshakeRequest", [F("Mechanism", "string")]),
    Struct("SaslHandshakeResponse", [F("ErrorCode", "int16"), F("Mechanisms", "[]string")]),
)

# kafkaw answers ApiVersions itself (kafkaw.protocol.apiversions: any request
# version, a v0-format answer); these are Kafka's definitions, for clients.
API_VERSIONS = Api(
    18,
    "ApiVersions",
    0,
    2,
    Struct("ApiVersionsRequest", []),
    Struct(
        "ApiVersionsResponse",
        [
            F("ErrorCode", "int16"),
            F(
                "ApiKeys",
                "[]ApiVersionsResponseKey",
                fields=[F("Index", "int16"), F("MinVersion", "int16"), F("MaxVersion", "int16")],
            ),
            F(THROTTLE, "int32", "1+"),
        ],
    ),
)

CREATE_TOPICS = Api(
    19,
    "CreateTopics",
    0,
    3,
    Struct(
        "CreateTopicsRequest",
        [
            F(
                "Topics",
                "[]CreatableTopic",
                fields=[
                    F("Name", "string"),
                    F("NumPartitions", "int32"),
                    F("ReplicationFactor", "int16"),
                    F(
                        "Assignments",
                        "[]CreatableReplicaAssignment",
                        fields=[F("PartitionIndex", "int32"), F("BrokerIds", "[]int32")],
                    ),
                    F(
                        "Configs",
                        "[]CreateableTopicConfig",
                        fields=[F("Name", "string"), F("Value", "string", nullable="0+")],
                    ),
                ],
            ),
            F("timeoutMs", "int32", default=60000),  # lowercase in Kafka's JSON
            F("validateOnly", "bool", "1+", default=False),
        ],
    ),
    Struct(
        "CreateTopicsResponse",
        [
            F(THROTTLE, "int32", "2+"),
            F(
                "Topics",
                "[]CreatableTopicResult",
                fields=[
                    F("Name", "string"),
                    F("ErrorCode", "int16"),
                    F("ErrorMessage", "string", "1+", nullable="0+"),
                ],
            ),
        ],
    ),
)

DELETE_TOPICS = Api(
    20,
    "DeleteTopics",
    0,
    3,
    Struct("DeleteTopicsRequest", [F("TopicNames", "[]string"), F("TimeoutMs", "int32")]),
    Struct(
        "DeleteTopicsResponse",
        [
            F(THROTTLE, "int32", "1+"),
            F("Responses", "[]DeletableTopicResult", fields=[F("Name", "string"), F("ErrorCode", "int16")]),
        ],
    ),
)

INIT_PRODUCER_ID = Api(
    22,
    "InitProducerId",
    0,
    1,
    Struct("InitProducerIdRequest", [F("TransactionalId", "string", nullable="0+"), F("TransactionTimeoutMs", "int32")]),
    Struct(
        "InitProducerIdResponse",
        [
            F(THROTTLE, "int32"),
            F("ErrorCode", "int16"),
            F("ProducerId", "int64", default=-1),
            F("ProducerEpoch", "int16"),
        ],
    ),
)

DESCRIBE_CONFIGS = Api(
    32,
    "DescribeConfigs",
    0,
    2,
    Struct(
        "DescribeConfigsRequest",
        [
            F(
                "Resources",
                "[]DescribeConfigsResource",
                fields=[
                    F("ResourceType", "int8"),
                    F("ResourceName", "string"),
                    F("ConfigurationKeys", "[]string", nullable="0+"),
                ],
            ),
            F("IncludeSynoyms", "bool", "1+", default=False),  # Kafka's spelling
        ],
    ),
    Struct(
        "DescribeConfigsResponse",
        [
            F(THROTTLE, "int32"),
            F(
                "Results",
                "[]DescribeConfigsResult",
                fields=[
                    F("ErrorCode", "int16"),
                    F("ErrorMessage", "string", nullable="0+"),
                    F("ResourceType", "int8"),
                    F("ResourceName", "string"),
                    F(
                        "Configs",
                        "[]DescribeConfigsResourceResult",
                        fields=[
                            F("Name", "string"),
                            F("Value", "string", nullable="0+"),
                            F("ReadOnly", "bool"),
                            F("IsDefault", "bool", "0"),
                            F("ConfigSource", "int8", "1+", default=-1),
                            F("IsSensitive", "bool"),
                            F(
                                "Synonyms",
                                "[]DescribeConfigsSynonym",
                                "1+",
                                fields=[
                                    F("Name", "string", "1+"),
                                    F("Value", "string", "1+", nullable="0+"),
                                    F("Source", "int8", "1+"),
                                ],
                            ),
                        ],
                    ),
                ],
            ),
        ],
    ),
)

# --- ACLs (CreateAcls, DescribeAcls, DeleteAcls) -----------------------------

DESCRIBE_ACLS = Api(
    29,
    "DescribeAcls",
    0,
    1,
    Struct(
        "DescribeAclsRequest",
        [
            F("ResourceType", "int8"),
            F("ResourceNameFilter", "string", nullable="0+"),
            F("ResourcePatternType", "int8", "1+", default=3),
            F("PrincipalFilter", "string", nullable="0+"),
            F("HostFilter", "string", nullable="0+"),
            F("Operation", "int8"),
            F("PermissionType", "int8"),
        ],
    ),
    Struct(
        "DescribeAclsResponse",
        [
            F(THROTTLE, "int32"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
            F(
                "Resources",
                "[]DescribeAclsResource",
                fields=[
                    F("Type", "int8"),
                    F("Name", "string"),
                    F("PatternType", "int8", "1+", default=3),
                    F(
                        "Acls",
                        "[]AclDescription",
                        fields=[
                            F("Principal", "string"),
                            F("Host", "string"),
                            F("Operation", "int8"),
                            F("PermissionType", "int8"),
                        ],
                    ),
                ],
            ),
        ],
    ),
)

CREATE_ACLS = Api(
    30,
    "CreateAcls",
    0,
    1,
    Struct(
        "CreateAclsRequest",
        [
            F(
                "Creations",
                "[]CreatableAcl",
                fields=[
                    F("ResourceType", "int8"),
                    F("ResourceName", "string"),
                    F("ResourcePatternType", "int8", "1+", default=3),
                    F("Principal", "string"),
                    F("Host", "string"),
                    F("Operation", "int8"),
                    F("PermissionType", "int8"),
                ],
            ),
        ],
    ),
    Struct(
        "CreateAclsResponse",
        [
            F(THROTTLE, "int32"),
            F(
                "Results",
                "[]CreatableAclResult",
                fields=[F("ErrorCode", "int16"), F("ErrorMessage", "string", nullable="0+")],
            ),
        ],
    ),
)

DELETE_ACLS = Api(
    31,
    "DeleteAcls",
    0,
    1,
    Struct(
        "DeleteAclsRequest",
        [
            F(
                "Filters",
                "[]DeleteAclsFilter",
                fields=[
                    F("ResourceTypeFilter", "int8"),
                    F("ResourceNameFilter", "string", nullable="0+"),
                    F("PatternTypeFilter", "int8", "1+", default=3),
                    F("PrincipalFilter", "string", nullable="0+"),
                    F("HostFilter", "string", nullable="0+"),
                    F("Operation", "int8"),
                    F("PermissionType", "int8"),
                ],
            ),
        ],
    ),
    Struct(
        "DeleteAclsResponse",
        [
            F(THROTTLE, "int32"),
            F(
                "FilterResults",
                "[]DeleteAclsFilterResult",
                fields=[
                    F("ErrorCode", "int16"),
                    F("ErrorMessage", "string", nullable="0+"),
                    F(
                        "MatchingAcls",
                        "[]DeleteAclsMatchingAcl",
                        fields=[
                            F("ErrorCode", "int16"),
                            F("ErrorMessage", "string", nullable="0+"),
                            F("ResourceType", "int8"),
                            F("ResourceName", "string"),
                            F("PatternType", "int8", "1+", default=3),
                            F("Principal", "string"),
                            F("Host", "string"),
                            F("Operation", "int8"),
                            F("PermissionType", "int8"),
                        ],
                    ),
                ],
            ),
        ],
    ),
)

# --- end of ACLs --------------------------------------------------------------

SASL_AUTHENTICATE = Api(
    36,
    "SaslAuthenticate",
    0,
    1,
    Struct("SaslAuthenticateRequest", [F("AuthBytes", "bytes")]),
    Struct(
        "SaslAuthenticateResponse",
        [
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
            F("AuthBytes", "bytes"),
            F("SessionLifetimeMs", "int64", "1+", default=0),
        ],
    ),
)

CREATE_PARTITIONS = Api(
    37,
    "CreatePartitions",
    0,
    1,
    Struct(
        "CreatePartitionsRequest",
        [
            F(
                "Topics",
                "[]CreatePartitionsTopic",
                fields=[
                    F("Name", "string"),
                    F("Count", "int32"),
                    F("Assignments", "[]CreatePartitionsAssignment", nullable="0+", fields=[F("BrokerIds", "[]int32")]),
                ],
            ),
            F("TimeoutMs", "int32"),
            F("ValidateOnly", "bool"),
        ],
    ),
    Struct(
        "CreatePartitionsResponse",
        [
            F(THROTTLE, "int32"),
            F(
                "Results",
                "[]CreatePartitionsTopicResult",
                fields=[F("Name", "string"), F("ErrorCode", "int16"), F("ErrorMessage", "string", nullable="0+")],
            ),
        ],
    ),
)

DELETE_GROUPS = Api(
    42,
    "DeleteGroups",
    0,
    1,
    Struct("DeleteGroupsRequest", [F("GroupsNames", "[]string")]),  # Kafka's spelling
    Struct(
        "DeleteGroupsResponse",
        [
            F(THROTTLE, "int32"),
            F("Results", "[]DeletableGroupResult", fields=[F("GroupId", "string"), F("ErrorCode", "int16")]),
        ],
    ),
)

# --- SCRAM users on a running broker (issue 15): Kafka 2.7.0's v0, a flexible version ---

DESCRIBE_USER_SCRAM_CREDENTIALS = Api(
    50,
    "DescribeUserScramCredentials",
    0,
    0,
    Struct("DescribeUserScramCredentialsRequest", [F("Users", "[]UserName", nullable="0+", fields=[F("Name", "string")])]),
    Struct(
        "DescribeUserScramCredentialsResponse",
        [
            F(THROTTLE, "int32"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
            F(
                "Results",
                "[]DescribeUserScramCredentialsResult",
                fields=[
                    F("User", "string"),
                    F("ErrorCode", "int16"),
                    F("ErrorMessage", "string", nullable="0+"),
                    F("CredentialInfos", "[]CredentialInfo", fields=[F("Mechanism", "int8"), F("Iterations", "int32")]),
                ],
            ),
        ],
    ),
    flexibleVersions="0+",
)

ALTER_USER_SCRAM_CREDENTIALS = Api(
    51,
    "AlterUserScramCredentials",
    0,
    0,
    Struct(
        "AlterUserScramCredentialsRequest",
        [
            F("Deletions", "[]ScramCredentialDeletion", fields=[F("Name", "string"), F("Mechanism", "int8")]),
            F(
                "Upsertions",
                "[]ScramCredentialUpsertion",
                fields=[F("Name", "string"), F("Mechanism", "int8"), F("Iterations", "int32"), F("Salt", "bytes"), F("SaltedPassword", "bytes")],
            ),
        ],
    ),
    Struct(
        "AlterUserScramCredentialsResponse",
        [
            F(THROTTLE, "int32"),
            F(
                "Results",
                "[]AlterUserScramCredentialsResult",
                fields=[F("User", "string"), F("ErrorCode", "int16"), F("ErrorMessage", "string", nullable="0+")],
            ),
        ],
    ),
    flexibleVersions="0+",
)

# --- end of SCRAM users ---

APIS = {
    api.key: api
    for api in (
        PRODUCE,
        FETCH,
        LIST_OFFSETS,
        METADATA,
        OFFSET_COMMIT,
        OFFSET_FETCH,
        FIND_COORDINATOR,
        JOIN_GROUP,
        HEARTBEAT,
        LEAVE_GROUP,
        SYNC_GROUP,
        DESCRIBE_GROUPS,
        LIST_GROUPS,
        SASL_HANDSHAKE,
        API_VERSIONS,
        CREATE_TOPICS,
        DELETE_TOPICS,
        INIT_PRODUCER_ID,
        DESCRIBE_CONFIGS,
        SASL_AUTHENTICATE,
        CREATE_PARTITIONS,
        DELETE_GROUPS,
        # ACLs
        DESCRIBE_ACLS,
        CREATE_ACLS,
        DELETE_ACLS,
        DESCRIBE_USER_SCRAM_CREDENTIALS,
        ALTER_USER_SCRAM_CREDENTIALS,
    )
}
