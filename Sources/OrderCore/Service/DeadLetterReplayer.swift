import Kafka
import Logging

/// `order-service replay-dlq`: re-submits dead letters to the topic they came from (after a fix),
/// unchanged but for the dlq-* headers. Progress is committed in its own consumer group, so a
/// second run does not replay the same records; a dry run only lists them.
public struct DeadLetterReplayer: Sendable {
    public struct Entry: Sendable {
        public var partition: Int32
        public var offset: Int64
        public var sourceTopic: String?
        public var error: String?
        /// Why it is not replayed (its value was left out of the copy): nil when it is.
        public var skipped: String?
    }

    let configuration: KafkaConfiguration
    let topics: Topics
    let groupId: String
    let maxRecordBytes: Int
    let logger: Logger

    public init(
        configuration: KafkaConfiguration, topics: Topics, groupId: String = "order-service-dlq-replay",
        maxRecordBytes: Int = Limits.defaultMaxRecordBytes, logger: Logger
    ) {
        self.configuration = configuration
        self.topics = topics
        self.groupId = groupId
        self.maxRecordBytes = maxRecordBytes
        self.logger = logger
    }

    /// A replay failed: what was replayed before it is committed, the rest waits for the next run.
    public struct ReplayFailed: Error, CustomStringConvertible {
        public var partition: Int32
        public var offset: Int64
        public var replayed: Int
        public var error: any Error
        public var description: String {
            "replaying dead letter [\(partition)]@\(offset) failed after \(replayed) replayed (committed; run again to go on): \(error)"
        }
    }

    /// Replays (or, dry, lists) up to `limit` dead letters present when it starts.
    public func run(dryRun: Bool, limit: Int = .max, only sourceTopic: String? = nil) async throws -> [Entry] {
        var config = configuration
        config["group.id"] = groupId
        config["enable.auto.commit"] = "false"
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        var producerConfig = configuration
        // As the service's producer: copies are up to the service's record size.
        if producerConfig["message.max.bytes"] == nil { producerConfig["message.max.bytes"] = String(maxRecordBytes) }
        let producer = try KafkaProducer(configuration: producerConfig, logger: logger)
        let dlq = topics.deadLetters
        let partitions = try await consumer.topicPartitionCounts()[dlq] ?? 0
        var ends: [TopicPartition: Int64] = [:]
        var start: [TopicPartition: Int64] = [:]
        let committed = try await consumer.committed((0..<partitions).map { TopicPartition(dlq, $0) })
        for p in 0..<partitions {
            let tp = TopicPartition(dlq, p)
            let marks = try await consumer.watermarks(tp)
            let from = max(committed[tp].flatMap { $0 >= 0 ? $0 : nil } ?? marks.low, marks.low)
            if from < marks.high {
                ends[tp] = marks.high
                start[tp] = from
            }
        }
        var entries: [Entry] = []
        if !start.isEmpty {
            try consumer.assign(start)
            var remaining = Set(start.keys)
            for await record in consumer.records {
                let tp = record.topicPartition
                if record.offset &+ 1 >= ends[tp, default: .min] { remaining.remove(tp) }
                // Ours, or written by a Spring DeadLetterPublishingRecoverer.
                let source = record.header("dlq-source-topic")?.stringValue ?? record.header("kafka_dlt-original-topic")?.stringValue
                if sourceTopic == nil || source == sourceTopic {
                    // A copy whose value was left out (too large to keep) cannot be replayed: an
                    // empty value would be a different record. Listed, passed over.
                    let omitted = record.header("dlq-value-omitted") != nil
                    entries.append(Entry(
                        partition: record.partition, offset: record.offset, sourceTopic: source, error: record.header("dlq-error")?.stringValue,
                        skipped: omitted ? "its value was not kept (dlq-value-omitted)" : nil))
                    if omitted {
                        if !dryRun { try consumer.store(tp, nextOffset: record.offset &+ 1) }
                    } else if !dryRun, let source, !source.isEmpty {
                        var headers = record.headers.filter {
                            !$0.key.hasPrefix("dlq-") && !$0.key.hasPrefix("kafka_dlt-") && $0.key != "kafka_deliveryAttempt"
                        }
                        headers.append(KafkaHeader("dlq-replayed-from", "\(dlq)/\(record.partition)/\(record.offset)"))
                        do {
                            _ = try await producer.send(KafkaOutgoingRecord(topic: source, key: record.key, value: record.value, headers: headers))
                        } catch {
                            try? await consumer.commit()
                            await consumer.close()
                            await producer.close()
                            throw ReplayFailed(
                                partition: record.partition, offset: record.offset,
                                replayed: entries.count - 1 - entries.filter { $0.skipped != nil }.count, error: error)
                        }
                        try consumer.store(tp, nextOffset: record.offset &+ 1)
                    }
                }
                if remaining.isEmpty || entries.count >= limit { break }
            }
            if !dryRun { try await consumer.commit() }
        }
        await consumer.close()
        await producer.close()
        return entries
    }
}
