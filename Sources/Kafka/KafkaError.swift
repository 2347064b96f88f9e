import CRdKafka

/// The one error type of the Kafka module: the raw librdkafka code, whether retrying can help,
/// and whether the client handle is unusable afterwards.
public struct KafkaError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Raw `rd_kafka_resp_err_t` value (negative: client-side, positive: broker error codes).
    public let code: Int32
    public let message: String
    public let isRetriable: Bool
    public let isFatal: Bool

    public init(code: Int32, message: String, isRetriable: Bool = false, isFatal: Bool = false) {
        self.code = code
        self.message = message
        self.isRetriable = isRetriable
        self.isFatal = isFatal
    }

    init(_ err: rd_kafka_resp_err_t, context: String? = nil) {
        let name = String(cString: rd_kafka_err2name(err))
        let text = String(cString: rd_kafka_err2str(err))
        self.init(
            code: err.rawValue,
            message: context.map { "\($0): \(name): \(text)" } ?? "\(name): \(text)",
            isRetriable: KafkaError.retriableCodes.contains(err),
            isFatal: err == RD_KAFKA_RESP_ERR__FATAL)
    }

    /// Takes ownership of an `rd_kafka_error_t` and destroys it.
    init(consuming error: OpaquePointer, context: String? = nil) {
        defer { rd_kafka_error_destroy(error) }
        let text = String(cString: rd_kafka_error_string(error))
        self.init(
            code: rd_kafka_error_code(error).rawValue,
            message: context.map { "\($0): \(text)" } ?? text,
            isRetriable: rd_kafka_error_is_retriable(error) != 0,
            isFatal: rd_kafka_error_is_fatal(error) != 0)
    }

    public static func configuration(_ message: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue, message: message)
    }

    public static func closed(_ what: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__DESTROY.rawValue, message: "\(what) is closed")
    }

    public static func timedOut(_ what: String) -> KafkaError {
        KafkaError(code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue, message: "\(what) timed out", isRetriable: true)
    }

    public var description: String { "KafkaError(\(code)): \(message)" }

    public static let noError: Int32 = RD_KAFKA_RESP_ERR_NO_ERROR.rawValue
    /// Codes callers commonly test for.
    public static let invalidArgumentCode: Int32 = RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue
    public static let messageTimedOutCode: Int32 = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue
    public static let destroyedCode: Int32 = RD_KAFKA_RESP_ERR__DESTROY.rawValue
    /// A message purged from the producer's queue or from a request in flight (its close purges).
    public static let purgedQueueCode: Int32 = RD_KAFKA_RESP_ERR__PURGE_QUEUE.rawValue
    public static let purgedInFlightCode: Int32 = RD_KAFKA_RESP_ERR__PURGE_INFLIGHT.rawValue
    public static let messageSizeTooLargeCode: Int32 = RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE.rawValue
    /// The topic is not in the cluster (broker's UNKNOWN_TOPIC_OR_PART, or librdkafka's own).
    public var isUnknownTopic: Bool {
        code == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue || code == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC.rawValue
    }

    private static let retriableCodes: Set<rd_kafka_resp_err_t> = [
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR__WAIT_COORD,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
    ]
}

/// The version of the librdkafka that is loaded at run time (not the headers built against).
public enum LibRdKafka {
    public static var versionNumber: Int32 { rd_kafka_version() }
    public static var versionString: String { String(cString: rd_kafka_version_str()) }
    /// 2.1.0: older versions misread tagged fields in ApiVersions v3 replies (Tansu, newer brokers).
    public static let minimumVersionNumber: Int32 = 0x0201_00ff

    /// Throws a clear error when the loaded librdkafka is too old to talk to current brokers.
    public static func requireSupportedVersion() throws {
        guard versionNumber >= minimumVersionNumber else {
            throw KafkaError.configuration(
                "librdkafka \(versionString) is loaded, but 2.1.0 or newer is required "
                    + "(older versions misread ApiVersions v3 replies). Run deploy/local/setup.sh "
                    + "or point LD_LIBRARY_PATH at a newer librdkafka.")
        }
    }
}
