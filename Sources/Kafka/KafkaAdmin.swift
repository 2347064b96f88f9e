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
            guard let queue = rd_kafka_queue_new(client.handle) else { throw KafkaError.configuration("rd_kafka_queue_new failed") }
            defer { rd_kafka_queue_destroy(queue) }
            let options = rd_kafka_AdminOptions_new(client.handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
            defer { rd_kafka_AdminOptions_destroy(options) }
            _ = rd_kafka_AdminOptions_set_request_timeout(options, Int32(timeoutMs), &errstr, errstr.count)
            newTopics.withUnsafeMutableBufferPointer { buf in
                rd_kafka_CreateTopics(client.handle, buf.baseAddress, buf.count, options, queue)
            }
            guard let event = rd_kafka_queue_poll(queue, timeoutMs + 1_000) else { throw KafkaError.timedOut("CreateTopics") }
            defer { rd_kafka_event_destroy(event) }
            let eventErr = rd_kafka_event_error(event)
            guard eventErr == RD_KAFKA_RESP_ERR_NO_ERROR, let result = rd_kafka_event_CreateTopics_result(event) else {
                throw KafkaError(eventErr, context: "CreateTopics")
            }
            var count = 0
            guard let results = rd_kafka_CreateTopics_result_topics(result, &count) else { return [:] }
            var out: [String: CreateOutcome] = [:]
            for i in 0..<count {
                let r = results[i]
                let name = String(cString: rd_kafka_topic_result_name(r))
                let err = rd_kafka_topic_result_error(r)
                switch err {
                case RD_KAFKA_RESP_ERR_NO_ERROR: out[name] = .created
                case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: out[name] = .alreadyExisted
                default:
                    let text = rd_kafka_topic_result_error_string(r).map { String(cString: $0) }
                    out[name] = .failed(KafkaError(err, context: "create \(name)\(text.map { ": \($0)" } ?? "")"))
                }
            }
            return out
        }
    }
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
