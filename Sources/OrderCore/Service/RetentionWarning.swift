import Logging
import ServiceLifecycle

/// Once at start: logs request topics whose retention outlasts the idempotency retention
/// (contract 9.1), and written topics whose `max.message.bytes` is below the record budget
/// (contract 9.9). Never fails the start (a broker may not answer DescribeConfigs). Then it waits
/// for its graceful shutdown, so that it never ends while the group is shutting down (ServiceGroup
/// takes any service that ends out of turn for a failure).
struct RetentionWarning: Service {
    let manager: TopicManager
    let topics: Topics
    let idempotencyRetentionHours: Int
    var maxRecordBytes = Limits.defaultMaxRecordBytes
    var logger: Logger?

    func run() async throws {
        await manager.warnAboutRetention(topics, idempotencyRetentionHours: idempotencyRetentionHours)
        for message in await manager.recordSizeFindings(topics, maxRecordBytes: maxRecordBytes) { logger?.error("\(message)") }
        try? await gracefulShutdown()
    }
}
