import CRdKafka
import Logging

/// A topic as declared in topics.yaml.
public struct TopicSpec: Sendable, Equatable {
    public var name: String
    public var partitions: Int32
    public var replicationFactor: Int32
    public var configs: [String: String]

    public init(name: String, partitions: Int32, replicationFactor: Int32 = 1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// Topic administration over the Admin API.
public final class KafkaAdmin: Sendable {
    private let client: RdKafkaClient
    /// Serves the handle's main queue (error callbacks), which would otherwise grow unbounded.
    private let poller: PollThread

    public init(configuration: KafkaConfiguration, logger: Logger) throws {
        let client = try RdKafkaClient(
            kind: RD_KAFKA_PRODUCER, configuration: configuration, callbacks: RdKafkaCallbacks(logger: logger))
        self.client = client
        poller = PollThread(name: "kafka-admin-poll") { thread in
            while !thread.isStopRequested { rd_kafka_poll(client.handle, 100) }
        }
    }

    deinit { poller.requestStop() }

    /// Topic name → partition count, as the cluster reports them.
    public func topicPartitionCounts(timeoutMs: Int32 = 10_000) async throws -> [String: Int32] {
        let client = self.client
        return try await runBlocking { try client.metadataBlocking(timeoutMs: timeoutMs) }
    }

    public enum CreateOutcome: Sendable, Equatable {
        case created
        case alreadyExisted
        case failed(KafkaError)
    }

    /// Creates the given topics; a topic that exists already is reported, not an error.
    public func createTopics(_ specs: [TopicSpec], timeoutMs: Int32 = 15_000) async throws -> [String: CreateOutcome] {
        guard !specs.isEmpty else { return [:] }
        let client = self.client
        return try await runBlocking {
            var errstr = [CChar](repeating: 0, count: 512)
            var newTopics: [OpaquePointer?] = []
            defer { newTopics.forEach { rd_kafka_NewTopic_destroy($0) } }
            for spec in specs {
                guard let nt = rd_kafka_NewTopic_new(spec.name, spec.partitions, spec.replicationFactor, &errstr, errstr.count)
                else { throw KafkaError.configuration("topic \(spec.name): \(string(fromBuffer: errstr))") }
                newTopics.append(nt)
                for (k, v) in spec.configs.sorted(by: { $0.key < $1.key }) {
                    let err = rd_kafka_NewTopic_set_config(nt, k, v)
                    guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "topic config \(k)") }
                }
            }
            return try client.adminRequest(RD_KAFKA_ADMIN_OP_CREATETOPICS, "CreateTopics", timeoutMs: timeoutMs) { options, queue in
                newTopics.withUnsafeMutableBufferPointer { buf in
                    rd_kafka_CreateTopics(client.handle, buf.baseAddress, buf.count, options, queue)
                }
            } read: { event in
                guard let result = rd_kafka_event_CreateTopics_result(event) else { throw KafkaError.configuration("not a CreateTopics result") }
                var count = 0
                let results = rd_kafka_CreateTopics_result_topics(result, &count)
                return topicResults(results, count: count, verb: "create") { err in
                    switch err {
                    case RD_KAFKA_RESP_ERR_NO_ERROR: .created
                    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: .alreadyExisted
                    default: nil
                    }
                } failed: { .failed($0) }
            }
        }
    }

    public enum DeleteOutcome: Sendable, Equatable {
        case deleted
        case didNotExist
        case failed(KafkaError)
    }

    /// Deletes the given topics (records, offsets; a broker may re-create one that clients still
    /// use if it auto-creates topics). A topic that does not exist is reported, not an error.
    public func deleteTopics(_ names: [String], timeoutMs: Int32 = 15_000) async throws -> [String: DeleteOutcome] {
        guard !names.isEmpty else { return [:] }
        let client = self.client
        return try await runBlocking {
            var deletes: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
            defer { deletes.forEach { rd_kafka_DeleteTopic_destroy($0) } }
            return try client.adminRequest(RD_KAFKA_ADMIN_OP_DELETETOPICS, "DeleteTopics", timeoutMs: timeoutMs) { options, queue in
                deletes.withUnsafeMutableBufferPointer { buf in
                    rd_kafka_DeleteTopics(client.handle, buf.baseAddress, buf.count, options, queue)
                }
            } read: { event in
                guard let result = rd_kafka_event_DeleteTopics_result(event) else { throw KafkaError.configuration("not a DeleteTopics result") }
                var count = 0
                let results = rd_kafka_DeleteTopics_result_topics(result, &count)
                return topicResults(results, count: count, verb: "delete") { err in
                    switch err {
                    case RD_KAFKA_RESP_ERR_NO_ERROR: .deleted
                    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART: .didNotExist
                    default: nil
                    }
                } failed: { .failed($0) }
            }
        }
    }

    public enum ConfigsOutcome: Sendable, Equatable {
        /// The topic's configuration as the broker reports it (defaults included when the broker
        /// sends them); entries without a value (sensitive ones) are left out.
        case configs([String: String])
        case failed(KafkaError)
    }

    /// The configuration of the given topics (DescribeConfigs, resource type topic).
    public func describeTopicConfigs(_ names: [String], timeoutMs: Int32 = 15_000) async throws -> [String: ConfigsOutcome] {
        guard !names.isEmpty else { return [:] }
        let client = self.client
        return try await runBlocking {
            var resources: [OpaquePointer?] = names.map { rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, $0) }
            defer { resources.forEach { rd_kafka_ConfigResource_destroy($0) } }
            return try client.adminRequest(RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, "DescribeConfigs", timeoutMs: timeoutMs) { options, queue in
                resources.withUnsafeMutableBufferPointer { buf in
                    rd_kafka_DescribeConfigs(client.handle, buf.baseAddress, buf.count, options, queue)
                }
            } read: { event in
                guard let result = rd_kafka_event_DescribeConfigs_result(event) else {
                    throw KafkaError.configuration("not a DescribeConfigs result")
                }
                var count = 0
                guard let described = rd_kafka_DescribeConfigs_result_resources(result, &count) else { return [:] }
                // Copied out here: the strings belong to the event, which is destroyed on return.
                var out: [String: ConfigsOutcome] = [:]
                for i in 0..<count {
                    guard let r = described[i], let namePtr = rd_kafka_ConfigResource_name(r) else { continue }
                    let name = String(cString: namePtr)
                    let err = rd_kafka_ConfigResource_error(r)
                    guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                        let text = rd_kafka_ConfigResource_error_string(r).map { String(cString: $0) }
                        out[name] = .failed(KafkaError(err, context: "describe configs of \(name)\(text.map { ": \($0)" } ?? "")"))
                        continue
                    }
                    var entryCount = 0
                    var configs: [String: String] = [:]
                    if let entries = rd_kafka_ConfigResource_configs(r, &entryCount) {
                        for j in 0..<entryCount {
                            guard let e = entries[j], let key = rd_kafka_ConfigEntry_name(e), let value = rd_kafka_ConfigEntry_value(e)
                            else { continue }
                            configs[String(cString: key)] = String(cString: value)
                        }
                    }
                    out[name] = .configs(configs)
                }
                return out
            }
        }
    }
}

extension RdKafkaClient {
    /// One Admin API round trip: `issue` sends the request with `options` to `queue`; `read` reads
    /// the result event, which is destroyed when it returns (copy everything out).
    fileprivate func adminRequest<T>(
        _ op: rd_kafka_admin_op_t, _ what: String, timeoutMs: Int32,
        issue: (_ options: OpaquePointer?, _ queue: OpaquePointer) -> Void, read: (OpaquePointer) throws -> T
    ) throws -> T {
        var errstr = [CChar](repeating: 0, count: 512)
        guard let queue = rd_kafka_queue_new(handle) else { throw KafkaError.configuration("rd_kafka_queue_new failed") }
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, op)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        issue(options, queue)
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 1_000) else { throw KafkaError.timedOut(what) }
        defer { rd_kafka_event_destroy(event) }
        let eventErr = rd_kafka_event_error(event)
        guard eventErr == RD_KAFKA_RESP_ERR_NO_ERROR else {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) }
            throw KafkaError(eventErr, context: "\(what)\(text.map { ": \($0)" } ?? "")")
        }
        return try read(event)
    }
}

/// Per-topic outcomes of CreateTopics/DeleteTopics: `outcome` maps the codes that are not
/// failures, everything else becomes `failed`.
private func topicResults<Outcome>(
    _ results: UnsafeMutablePointer<OpaquePointer?>?, count: Int, verb: String,
    outcome: (rd_kafka_resp_err_t) -> Outcome?, failed: (KafkaError) -> Outcome
) -> [String: Outcome] {
    guard let results else { return [:] }
    var out: [String: Outcome] = [:]
    for i in 0..<count {
        guard let r = results[i], let namePtr = rd_kafka_topic_result_name(r) else { continue }
        let name = String(cString: namePtr)
        let err = rd_kafka_topic_result_error(r)
        if let o = outcome(err) {
            out[name] = o
        } else {
            let text = rd_kafka_topic_result_error_string(r).map { String(cString: $0) }
            out[name] = failed(KafkaError(err, context: "\(verb) \(name)\(text.map { ": \($0)" } ?? "")"))
        }
    }
    return out
}

/// librdkafka's in-process mock cluster, for fault-injection tests (request errors, broker
/// down/up, round-trip time). Not a substitute for a real broker.
public final class KafkaMockCluster: @unchecked Sendable {
    private let owner: RdKafkaClient
    private let cluster: OpaquePointer
    public let bootstrapServers: String

    public init(brokers: Int32 = 1, logger: Logger) throws {
        owner = try RdKafkaClient(
            kind: RD_KAFKA_PRODUCER, configuration: KafkaConfiguration(), callbacks: RdKafkaCallbacks(logger: logger))
        guard let cluster = rd_kafka_mock_cluster_new(owner.handle, brokers) else {
            throw KafkaError.configuration("cannot create mock cluster")
        }
        self.cluster = cluster
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
    }

    deinit { rd_kafka_mock_cluster_destroy(cluster) }

    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32 = 1) throws {
        let err = rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "mock topic") }
    }

    /// The next `errors.count` requests of this API key (0 = Produce, 8 = OffsetCommit, …) fail
    /// with these error codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) {
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
        codes.withUnsafeBufferPointer { rd_kafka_mock_push_request_errors_array(cluster, apiKey, codes.count, $0.baseAddress) }
    }

    /// The next `errors.count` requests of this API key that reach this broker fail with these
    /// error codes, in order (other brokers answer normally).
    public func pushRequestErrors(broker id: Int32, apiKey: Int16, errors: [Int32]) {
        for e in errors { _ = swift_rd_kafka_mock_broker_push_request_error(cluster, id, apiKey, rd_kafka_resp_err_t(rawValue: e), 0) }
    }

    /// How many pushed errors of this API key this broker has not returned yet.
    public func pendingRequestErrors(broker id: Int32, apiKey: Int16) -> Int {
        var count = 0
        _ = rd_kafka_mock_broker_error_stack_cnt(cluster, id, apiKey, &count)
        return count
    }

    public func setBrokerDown(_ id: Int32) { _ = rd_kafka_mock_broker_set_down(cluster, id) }
    public func setBrokerUp(_ id: Int32) { _ = rd_kafka_mock_broker_set_up(cluster, id) }
    public func setRoundTripTime(broker id: Int32, milliseconds: Int32) { _ = rd_kafka_mock_broker_set_rtt(cluster, id, milliseconds) }

    /// Makes `broker` the leader of a partition (the mock picks a random replica otherwise).
    /// Clients learn it from their next metadata refresh: set it before they connect.
    public func setPartitionLeader(topic: String, partition: Int32, broker: Int32) throws {
        let err = rd_kafka_mock_partition_set_leader(cluster, topic, partition, broker)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "mock leader of \(topic)[\(partition)]") }
    }

    /// Makes `broker` the coordinator of a consumer group (by default the mock picks one by hash).
    public func setGroupCoordinator(group: String, broker: Int32) throws {
        let err = rd_kafka_mock_coordinator_set(cluster, "group", group, broker)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err, context: "mock coordinator of \(group)") }
    }

    /// Broker error codes for tests, by name.
    public static let notEnoughReplicas = RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS.rawValue
    public static let requestTimedOut = RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT.rawValue
    public static let notLeaderForPartition = RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION.rawValue
    public static let topicAuthorizationFailed = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED.rawValue
    public static let notCoordinator = RD_KAFKA_RESP_ERR_NOT_COORDINATOR.rawValue
    public static let coordinatorNotAvailable = RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE.rawValue
}
