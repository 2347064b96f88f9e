import Logging
import ServiceLifecycle

/// Deletes stored replies older than the idempotency retention (`ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS`):
/// once at start, then every `interval`, until the graceful shutdown. A failed round (an outage)
/// waits for the next one.
struct IdempotencyExpiry: Service {
    let store: OrderStore
    let retentionHours: Int
    var interval: Duration = .seconds(600)
    let logger: Logger

    func run() async throws {
        let product = retentionHours.multipliedReportingOverflow(by: 3600)
        let seconds = product.overflow ? Int.max : product.partialValue
        try? await cancelWhenGracefulShutdown { [store, interval, logger] in
            while !Task.isCancelled {
                if let n = try? await store.expireReplies(olderThanSeconds: seconds), n > 0 {
                    logger.info("expired \(n) idempotency entries")
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
