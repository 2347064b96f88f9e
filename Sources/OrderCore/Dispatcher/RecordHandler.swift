import Kafka

/// What the dispatcher drives: turns one record into the records to send in answer.
public protocol RecordHandler: Sendable {
    /// Records with the same lane key are handled one at a time, in offset order.
    func laneKey(for record: KafkaRecord) -> String
    /// Handles the record; throws on failure. Must be safe to call again for the same record.
    func handle(_ record: KafkaRecord) async throws -> [KafkaOutgoingRecord]
    /// The answer for a record whose handling failed for good (a bug, not an outage).
    func failure(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord]
    /// The answer when the broker refused the record's reply for good (too large, the reply-to
    /// topic missing or not writable): a small reply that surely can be delivered.
    func undeliverable(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord]
    /// The answer for a record that was in progress at repeated unclean exits (the crash-loop
    /// breaker gave it up): it is not handled; an error reply and a dead-letter copy, say.
    func poisoned(_ record: KafkaRecord) -> [KafkaOutgoingRecord]
    /// Whether retrying can help (database or broker outage) rather than being a bug.
    func isRetriable(_ error: any Error) -> Bool
    /// Whether retrying the send of this output can help; `failures`: how often its send has
    /// failed so far, this time included.
    func isRetriable(_ error: any Error, sending output: KafkaOutgoingRecord, failures: Int) -> Bool
}

extension RecordHandler {
    public func isRetriable(_ error: any Error, sending output: KafkaOutgoingRecord, failures: Int) -> Bool { isRetriable(error) }

    public func undeliverable(_ record: KafkaRecord, error: any Error) -> [KafkaOutgoingRecord] { failure(record, error: error) }
    public func poisoned(_ record: KafkaRecord) -> [KafkaOutgoingRecord] { failure(record, error: PoisonedRecord()) }
}

/// Why a record was given up by the crash-loop breaker.
public struct PoisonedRecord: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "this record stopped the service repeatedly; it was not processed" }
}
